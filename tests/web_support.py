"""Shared by the web tests: a tiny MNIST run trained once per test session, and test images as files."""
from __future__ import annotations

import io
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from cnnlab.datasets.dataset import Dataset
from cnnlab.datasets.registry import load
from cnnlab.runs import run_folder
from cnnlab.spec import zoo
from cnnlab.train.config import TrainConfig

_trained: dict[str, Path] = {}


def mnist() -> Dataset:
    return load("mnist")


def tiny_run(root: Path) -> Path:
    """The seed CNN after 1 epoch on 3,000 MNIST images (about 90% test accuracy), trained once per session."""
    if "run" not in _trained:
        data = mnist()
        small = replace(data, x_train=data.x_train[:3000], y_train=data.y_train[:3000],
                        x_test=data.x_test[:2000], y_test=data.y_test[:2000])
        spec, _ = zoo.resolve("seed", small.input_shape, 10)
        config = TrainConfig(epochs=1, batch_size=16, device="cpu", seed=0)
        folder, _, evaluation = run_folder.train_run(small, spec, config, root / "seed-mnist-tiny", model_name="seed")
        assert evaluation.accuracy > 0.88, f"the tiny run reached only {evaluation.accuracy:.3f}"
        _trained["run"] = folder
    return _trained["run"]


def runs_dir_with_tiny_run(tmp: Path, trained: Path) -> Path:
    """A fresh runs folder holding a copy of the tiny run (tests that train add runs beside it)."""
    root = tmp / "runs"
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(trained, root / trained.name)
    return root


def png_bytes(image: np.ndarray) -> bytes:
    arr = np.asarray(image)
    buf = io.BytesIO()
    Image.fromarray(arr[:, :, 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr).save(buf, format="PNG")
    return buf.getvalue()
