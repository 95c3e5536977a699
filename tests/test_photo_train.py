"""`train` on a photo folder: the device reaches every tensor of the photo path, and Ctrl-C / SIGTERM stop it
cleanly. Photos are crops of scikit-image's chelsea the cat and cup of coffee."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import photo_support
import pytest
import torch

from cnnlab.backbones.efficientnet_lite import EfficientNetLite
from cnnlab.backbones.inference import optimize_for_inference
from cnnlab.runs import photos as transfer
from cnnlab.train import fine_tune as fine_tune_mod
from cnnlab.train import photo_features

skimage_data = pytest.importorskip("skimage.data")
META = torch.device("meta")  # a device with no data: stands for a GPU, and shows where each tensor went


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos") / "cat_or_coffee"
    return photo_support.photo_folder(root, {"cat": skimage_data.chelsea(), "coffee": skimage_data.coffee()},
                                      n_train=8, n_test=4)


def test_feature_dtype_follows_the_device(monkeypatch):
    monkeypatch.setattr(photo_features, "native_bf16", lambda device: False)
    assert photo_features.feature_dtype(torch.device("cuda")) == torch.float16  # a GPU without bf16
    monkeypatch.setattr(photo_features, "native_bf16", lambda device: True)
    assert photo_features.feature_dtype(torch.device("cuda")) == torch.bfloat16
    assert photo_features.feature_dtype(torch.device("cpu")) == torch.float32  # as the saved model computes them


def test_features_run_on_the_device_asked_for(monkeypatch):
    seen = []

    def record(model, images, batch_size, pool):
        seen.append((next(model.parameters()).device, images.device))
        return torch.zeros((len(images), 1280))
    monkeypatch.setattr(photo_features, "extract_features", record)
    images = np.zeros((3, 32, 32, 3), dtype=np.uint8)
    out = photo_features.photo_features(images, EfficientNetLite("lite0", include_top=False), META, True, None,
                                        lambda line: None, "Lite0")
    assert [k for k in out] == ["plain", "flip"] and seen == [(META, torch.device("cpu"))] * 2
    assert "meta" in str(seen)  # the network was moved; extract_features moves each batch to it (next test)


def test_each_batch_and_the_fine_tune_bottom_follow_the_network():
    net = EfficientNetLite("lite0", include_top=False).to(META)
    fast = optimize_for_inference(net, dtype=torch.float32)
    from cnnlab.backbones.inference import extract_features
    assert extract_features(fast, torch.zeros((2, 32, 32, 3), dtype=torch.uint8), pool=True).device == META
    bottom = fine_tune_mod._bottom(fast, 2, torch.float32)
    assert bottom(torch.zeros((2, 3, 32, 32))).device == META  # CPU pixels moved onto the network's device


def test_train_photos_passes_the_device_to_features_and_evaluation(photos, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "cache"))
    asked, features_on, evaluated_on = [], [], []
    monkeypatch.setattr(transfer, "resolve_device", lambda name: asked.append(name) or META)

    def features(images, net, device, flip, cache, say, name):
        features_on.append(device)
        gen = torch.Generator().manual_seed(0)
        return {"plain": torch.randn(len(images), 1280, generator=gen),
                **({"flip": torch.randn(len(images), 1280, generator=gen)} if flip else {})}
    monkeypatch.setattr(transfer, "photo_features", features)

    def evaluate(module, *args, **kwargs):
        evaluated_on.append(next(module.parameters()).device)
        raise RuntimeError("stop here")
    monkeypatch.setattr(transfer.run_folder, "evaluate", evaluate)
    options = transfer.PhotoOptions(steps=("lite0",), flip=False)
    with pytest.raises(RuntimeError, match="stop here"):
        transfer.train_photos(photos, tmp_path / "run", device="cuda", options=options, say=lambda line: None)
    assert asked == ["cuda"] and features_on == [META] and evaluated_on == [META]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("signum, how", [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "Ctrl-C")])
def test_a_signal_during_photo_training_leaves_no_run_folder(photos, tmp_path, signum, how):
    out = tmp_path / "runs" / "run"
    env = {**os.environ, "CNNLAB_DATA": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "train", "--data", str(photos), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:  # the photos are read: features come next
        if line.startswith("folder "):
            break
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert f"cnnlab: photo training stopped by {how}; no run folder was written" in err
    assert not out.exists() and not any(p.name.startswith(".run.") for p in out.parent.glob(".*"))
    assert "Traceback" not in err
