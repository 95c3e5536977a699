"""Tests for cnnlab.bench.peers: result shape, input checks, and the keras-missing path. Fast (tiny data)."""

import sys

import numpy as np
import pytest

from cnnlab.bench import peers

RESULT_KEYS = {
    "name", "reached", "time_to_target_s", "epochs", "test_acc", "epoch_times_s",
    "train_seconds", "params", "device", "peak_rss_mb", "cuda_peak_mb",
}


def tiny_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 images with random labels: enough to exercise the loop, not to learn anything."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    images.flags.writeable = False  # IDX loaders often hand out read-only views of the file
    return images, rng.integers(0, 10, n)


def check_result(res: dict, name: str, max_epochs: int) -> None:
    assert RESULT_KEYS <= res.keys()
    assert res["name"] == name
    assert res["params"] == peers.SEED_CNN_PARAMS
    assert 1 <= res["epochs"] <= max_epochs
    assert len(res["test_acc"]) == len(res["epoch_times_s"]) == res["epochs"]
    assert all(0.0 <= a <= 1.0 for a in res["test_acc"])
    assert all(t > 0 for t in res["epoch_times_s"])
    assert res["train_seconds"] == pytest.approx(sum(res["epoch_times_s"]))
    if res["reached"]:
        assert 0 < res["time_to_target_s"] <= res["train_seconds"]
    else:
        assert res["time_to_target_s"] is None


def test_seed_cnn_has_keras_param_count():
    model = peers.seed_cnn_torch()
    assert sum(p.numel() for p in model.parameters()) == 93_322


# "error" turns torch's warning about non-writable arrays into a failure: inputs must be copied.
@pytest.mark.filterwarnings("error::UserWarning")
def test_pytorch_reference_result_shape():
    x_tr, y_tr = tiny_digits(512, seed=1)
    x_te, y_te = tiny_digits(256, seed=2)
    lines = []
    res = peers.pytorch_reference(x_tr, y_tr, x_te, y_te, target=1.01, max_epochs=1, log=lines.append)
    check_result(res, "pytorch", max_epochs=1)
    assert res["epochs"] == 1 and not res["reached"]  # target 1.01 can never be met
    assert res["device"] == "cpu" and res["cuda_peak_mb"] is None
    assert len(lines) == 1 and "epoch 1" in lines[0]


def test_pytorch_reference_stops_at_target_and_takes_channels_last():
    x_tr, y_tr = tiny_digits(128, seed=3)
    x_te, y_te = tiny_digits(64, seed=4)
    # Any accuracy reaches a target of 1e-9, so the loop must stop after the first epoch.
    res = peers.pytorch_reference(x_tr[..., None], y_tr, x_te[..., None], y_te,
                                  target=1e-9, max_epochs=3, log=lambda s: None)
    assert res["reached"] and res["epochs"] == 1
    assert res["time_to_target_s"] == pytest.approx(res["train_seconds"])


@pytest.mark.parametrize("fn", [peers.pytorch_reference, peers.keras_reference])
def test_bad_inputs_name_the_value(fn):
    x, y = tiny_digits(8, seed=5)
    with pytest.raises(ValueError, match=r"x_train must have shape .* got \(8, 28, 27\)"):
        fn(x[:, :, :27], y, x, y)
    with pytest.raises(ValueError, match="x_test must be uint8"):
        fn(x, y, x.astype(np.float32), y)
    with pytest.raises(ValueError, match=r"y_train must have shape \(8,\)"):
        fn(x, y[:4], x, y)
    with pytest.raises(ValueError, match="max_epochs must be >= 1, got 0"):
        fn(x, y, x, y, max_epochs=0)


def test_keras_reference_returns_none_without_keras(monkeypatch):
    # A None entry in sys.modules makes `import keras` raise ImportError, installed or not.
    monkeypatch.setitem(sys.modules, "keras", None)
    x, y = tiny_digits(8, seed=6)
    lines = []
    assert peers.keras_reference(x, y, x, y, log=lines.append) is None
    assert lines and "keras" in lines[0]


def test_keras_reference_result_shape_when_installed():
    keras = pytest.importorskip("keras")
    x_tr, y_tr = tiny_digits(256, seed=7)
    x_te, y_te = tiny_digits(128, seed=8)
    res = peers.keras_reference(x_tr, y_tr, x_te, y_te, target=1.01, max_epochs=1, log=lambda s: None)
    check_result(res, "keras", max_epochs=1)
    assert res["backend"] == keras.backend.backend()


def test_memory_helpers():
    peers.reset_peak_rss()  # may be unsupported; must not raise either way
    peak = peers.peak_rss_mb()
    if sys.platform.startswith("linux"):  # read from /proc: there is always an answer
        assert peak is not None and peak > 50  # a Python process with torch loaded holds well over 50 MiB
    else:
        assert peak is None or peak > 50
    assert peers.cuda_peak_mb("cpu") is None
