"""`cnnlab export RUN --check FOLDER`: run the exported file over the user's own images and compare it with
cnnlab's predictions of the same decoded pixels, so an export that disagrees is caught before deployment.

Both sides get the same uint8 (N, H, W, C) batches from the one decoder and the model's own input rule
(`decoded_batches` -> `to_model_input`); the exported graph scales them itself, as it will in deployment.
cnnlab's side is torch (`runs.fast_predict.Classifier` with engine="torch": the fast backbone copy, bf16 where
native), never the export itself, so the probability difference includes that rounding.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from cnnlab.datasets.decode_stream import decoded_batches
from cnnlab.datasets.image_walk import image_paths
from cnnlab.progress import CountProgress
from cnnlab.runs.fast_predict import Classifier


@dataclass(frozen=True)
class ExportCheck:
    images: int
    agree: int  # same top-1 class
    max_difference: float  # largest |p_export - p_cnnlab| over all images and classes
    unreadable: int
    worst: str | None  # the image with the largest difference

    def text(self, exported: Path) -> str:
        share = self.agree / max(self.images, 1)
        return (f"check of {exported} on {self.images:,} images: same top-1 class on {self.agree:,} ({share:.1%}); "
                f"largest probability difference {self.max_difference:.4f}"
                + (f" ({self.worst})" if self.worst else "") + (f"; {self.unreadable} unreadable" if self.unreadable else ""))


def exported_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 batch -> probabilities, by onnxruntime for .onnx, by TorchScript for .pt."""
    if path.suffix == ".onnx":
        import onnxruntime as ort
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: session.run(["probabilities"], {"images": x})[0]
    import warnings

    import torch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is in maintenance, still the C++ route
        module = torch.jit.load(str(path)).eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x))[1].numpy()
    return run


def check_export(model: Any, exported: str | os.PathLike, folder: str | os.PathLike, batch_size: int = 32,
                 progress: bool = True) -> ExportCheck:
    files, _ = image_paths([folder])
    if not files:
        raise ValueError(f"no image files in {folder}")
    # cnnlab's own fp32 numbers, as `cnnlab predict FILE` and `evaluate` give them (not bf16, not the export)
    run_export, classifier = exported_runner(Path(exported)), Classifier(model, dtype=torch.float32, engine="torch")
    agree = images = unreadable = 0
    worst, worst_path = 0.0, None
    bar = CountProgress(len(files), "check", enabled=progress)
    for batch in decoded_batches(files, tuple(model.spec.input_shape), model.preprocessing, batch_size):
        unreadable += len(batch.errors)
        if len(batch.indices):
            ours, theirs = classifier(batch.images), run_export(batch.images)
            agree += int((ours.argmax(1) == theirs.argmax(1)).sum())
            diff = np.abs(ours - theirs).max(1)
            if diff.max() > worst:
                worst, worst_path = float(diff.max()), str(files[batch.indices[int(diff.argmax())]])
            images += len(batch.indices)
        bar.update(images + unreadable)
    bar.close()
    return ExportCheck(images, agree, worst, unreadable, worst_path)
