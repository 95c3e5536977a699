"""Streamed image folders (disk-backed memmaps) against the in-memory load and in-memory training."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnlab.cli import main
from cnnlab.datasets.folders import stream
from cnnlab.datasets.folders.export import export_images
from cnnlab.datasets.folders.load import load_folder
from cnnlab.train.config import TrainConfig
from cnnlab.train.device_data import targets_tensor, to_device_images
from cnnlab.train.fit import evaluate_tensors, fit


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "cache"))


@pytest.fixture
def digits(tmp_path, mnist) -> Path:
    """About 300 exported MNIST PNGs, one class per folder, a few stored as RGB, plus one bad file."""
    root = tmp_path / "digits"
    export_images(mnist, root, layout="classes", limit=150)
    for path in sorted(root.rglob("*.png"))[::7]:
        Image.open(path).convert("RGB").save(path)  # still gray inside: "auto" must keep one channel
    (root / "4" / "empty.png").write_bytes(b"")
    return root


def _same(a, b) -> None:
    for part in ("x_train", "y_train", "x_test", "y_test", "x_val", "y_val"):
        x, y = getattr(a, part), getattr(b, part)
        assert (x is None) == (y is None), part
        if x is not None:
            np.testing.assert_array_equal(x, y, err_msg=part)
    assert a.report.bad_files == b.report.bad_files and a.report.color == b.report.color


def test_streamed_load_equals_the_in_memory_load_without_materialising_it(digits, tmp_path, mnist):
    memory = load_folder(digits, cache=False, stream=False)
    streamed = load_folder(digits, stream=True)
    assert not isinstance(memory.x_train, np.memmap)
    assert isinstance(streamed.x_train, np.memmap) and isinstance(streamed.x_test, np.memmap)
    assert streamed.input_shape == (28, 28, 1) and [b.path for b in streamed.report.bad_files] == ["4/empty.png"]
    _same(memory, streamed)
    splits = tmp_path / "splits"  # train/ + test/ folders: parts are slices of one file too
    export_images(mnist, splits, limit=60)
    _same(load_folder(splits, cache=False, stream=False), load_folder(splits, stream=True))


def test_auto_streams_when_memory_is_short_and_stream_false_refuses(digits, monkeypatch):
    monkeypatch.setattr(stream, "memory_need", lambda n, size, c: (n * size[0] * size[1] * c, 1000))
    assert isinstance(load_folder(digits, cache=False).x_train, np.memmap)
    with pytest.raises(ValueError, match=r"need 0\.0 GB in memory but only 0\.0 GB is free; stream them from disk"):
        load_folder(digits, cache=False, stream=False)


def test_stream_cache_is_reused_and_invalidated_when_a_file_changes(digits, tmp_path):
    first = load_folder(digits, stream=True)
    again = load_folder(digits, stream=True)
    assert not first.report.cached and again.report.cached and again.report.cache_file == first.report.cache_file
    _same(first, again)
    changed = sorted((digits / "3").glob("*.png"))[0]
    Image.fromarray(np.full((28, 28), 7, np.uint8)).save(changed)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    third = load_folder(digits, stream=True)
    assert not third.report.cached
    rows = np.concatenate([third.x_train, third.x_test]).reshape(-1, 28 * 28)
    assert (rows == 7).all(1).sum() == 1
    folder = tmp_path / "cache" / "folders"
    assert len(list(folder.glob("*.npy"))) == 1 and len(list(folder.glob("*.json"))) == 1  # stale copy removed
    assert not list(folder.glob(".*"))  # no scratch or temporary file left behind


def _net() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 13 * 13, 10))


def test_training_on_the_memmap_gives_the_same_weights_as_in_memory(digits):
    data = load_folder(digits, stream=True)
    x, y = data.x_train, data.y_train
    config = TrainConfig(epochs=2, batch_size=32, precision="fp32", device="cpu", seed=3, validation_split=0.2)
    nets, logs = [], []
    for images in (x, np.array(x)):
        net = _net()
        history = fit(net, images, y, config).history
        history.pop("seconds")
        logs.append(history)
        nets.append(net)
    assert isinstance(x, np.memmap) and type(np.array(x)) is np.ndarray
    for (name, a), b in zip(nets[0].state_dict().items(), nets[1].state_dict().values()):
        assert torch.equal(a, b), name
    assert logs[0] == logs[1]  # val_loss/val_accuracy came from batches read off the memmap
    yt = targets_tensor(data.y_test, torch.device("cpu"))
    on_disk = evaluate_tensors(nets[0], data.x_test, yt, batch_size=16)
    assert on_disk == pytest.approx(evaluate_tensors(nets[0], to_device_images(np.array(data.x_test), torch.device("cpu")), yt))


def test_cli_train_stream_then_evaluate(digits, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(digits), "--stream", "--model", "mlp", "--epochs", "1", "--device", "cpu",
                 "--out", str(run)]) == 0
    assert ".npy" in capsys.readouterr().out  # the report names the streamed file
    assert main(["evaluate", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_test"] == len(load_folder(digits, stream=True).y_test)
