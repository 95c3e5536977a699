"""`train` on a photo folder: the device reaches every tensor of the photo path, and Ctrl-C / SIGTERM stop it
cleanly. Photos are crops of scikit-image's chelsea the cat and cup of coffee."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import photo_support
import pytest
import torch

from cnnlab.backbones.efficientnet_lite import EfficientNetLite
from cnnlab.backbones.inference import optimize_for_inference
from cnnlab.datasets.decode_stream import decoded_batches
from cnnlab.datasets.folders.load import load_folder
from cnnlab.fsutil import RACY_NS
from cnnlab.runs import embeddings, photo_stream, run_folder
from cnnlab.runs import photos as transfer
from cnnlab.runs.open_model import open_model
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


def _recorder(seen):
    """extract_features that notes (network device, network dtype, pixels device) and returns seeded features."""
    gen = torch.Generator().manual_seed(0)

    def record(model, images, batch_size, pool):
        param = next(model.parameters())
        seen.append((param.device, param.dtype, images.device))
        return torch.randn(len(images), 1280, generator=gen)
    return record


def test_features_run_on_the_device_asked_for(photos, monkeypatch):
    seen = []
    monkeypatch.setattr(embeddings, "extract_features", _recorder(seen))
    feats = photo_stream.stream_features(photos, "lite0", "auto", 0, META, True, cache=False, progress=False)
    assert feats.plain.shape == feats.mirrored.shape == (24, 1280) and feats.plain.device == torch.device("cpu")
    assert seen and set(seen) == {(META, torch.float32, torch.device("cpu"))}  # each batch moves to the network
    assert len(feats.fit) == 16 and len(feats.files.parts["test"]) == 8


def test_each_batch_and_the_fine_tune_bottom_follow_the_network():
    net = EfficientNetLite("lite0", include_top=False).to(META)
    fast = optimize_for_inference(net, dtype=torch.float32)
    from cnnlab.backbones.inference import extract_features
    assert extract_features(fast, torch.zeros((2, 32, 32, 3), dtype=torch.uint8), pool=True).device == META
    bottom = fine_tune_mod._bottom(fast, 2, torch.float32)
    assert bottom(torch.zeros((2, 3, 32, 32))).device == META  # CPU pixels moved onto the network's device


def test_train_photos_passes_the_device_to_features_and_the_test_scoring(photos, tmp_path, monkeypatch):
    """A GPU's bf16 features for the fit, fp32 ones for the test photos (as the saved model), all on the device."""
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "cache"))
    asked, seen = [], []
    monkeypatch.setattr(transfer, "resolve_device", lambda name: asked.append(name) or META)
    monkeypatch.setattr(photo_stream, "feature_dtype", lambda device: torch.bfloat16)
    monkeypatch.setattr(embeddings, "extract_features", _recorder(seen))
    written = []
    monkeypatch.setattr(transfer.run_folder, "write_run", lambda out, data, spec, module, *a, **k: written.append(
        next(module.parameters()).device))  # a config naming the meta device cannot be written
    options = transfer.PhotoOptions(steps=("lite0",), flip=False)
    _, _, evaluation = transfer.train_photos(photos, tmp_path / "run", device="cuda", options=options,
                                             say=lambda line: None, progress=False)
    assert asked == ["cuda"] and written == [torch.device("cpu")] and len(evaluation.y_true) == 8
    assert {s[0] for s in seen} == {META} and {s[2] for s in seen} == {torch.device("cpu")}
    assert [s[1] for s in seen] == [torch.bfloat16] * 1 + [torch.float32] * 1  # 24 photos, then the 8 test ones


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


@pytest.mark.parametrize("variant", ["lite0", "lite2"])
def test_streamed_crops_and_splits_are_load_folders_pixel_for_pixel(variant, tmp_path, monkeypatch):
    """One subfolder per class (the stratified holdout) with a broken file: the files the stream decodes, in the
    order of each split, are load_folder's images with the backbone's crop, and the same files are skipped."""
    root = tmp_path / "classes"
    rng = np.random.default_rng(1)
    for name, photo in (("cat", skimage_data.chelsea()), ("coffee", skimage_data.coffee())):
        (root / name).mkdir(parents=True)
        for i, img in enumerate(photo_support.crops(photo, 7, rng)):
            img.save(root / name / f"{i}.jpg", quality=90)
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    monkeypatch.setattr(embeddings, "extract_features", _recorder([]))  # the pixels matter here, not the network
    feats = photo_stream.stream_features(root, variant, "auto", 3, torch.device("cpu"), False, cache=False,
                                         progress=False)
    size, resize_to = photo_features.crop_of(variant)
    data = load_folder(root, image_size=(size, size), resize_to=resize_to, seed=3, cache=False)
    decoded = {}
    for batch in decoded_batches(feats.files.paths, feats.embedder.input_shape, feats.embedder.preprocessing):
        decoded.update(zip(batch.indices, batch.images))
    for part in ("train", "test"):
        rows = feats.files.parts[part]
        assert np.array_equal(np.stack([decoded[i] for i in rows]), getattr(data, f"x_{part}"))
        assert np.array_equal(feats.files.labels[rows], getattr(data, f"y_{part}"))
    got, want = feats.files.report, data.report
    assert got.bad_files == want.bad_files and len(got.bad_files) == 1
    assert (got.counts, got.test_from, got.size_note, got.color_note) == (want.counts, want.test_from,
                                                                          want.size_note, want.color_note)


def test_reported_test_scores_are_what_cnnlab_evaluate_gets(photos, tmp_path, monkeypatch):
    """metrics.json comes from streamed fp32 features through the head; `evaluate` runs the saved model."""
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "cache"))
    out = tmp_path / "run"
    options = transfer.PhotoOptions(steps=("lite0",), flip=True)
    _, _, reported = transfer.train_photos(photos, out, options=options, say=lambda line: None, progress=False)
    model = open_model(out)
    data = run_folder.dataset_of_run(model.run_folder, None, None, model.preprocessing)
    evaluated = run_folder.evaluate(model.module, model.spec, data.x_test, data.y_test, model.class_names)
    assert evaluated.accuracy == reported.accuracy and np.array_equal(evaluated.y_true, reported.y_true)
    np.testing.assert_allclose(evaluated.probs, reported.probs, atol=1e-4, rtol=0)
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"] == evaluated.accuracy


# Photo training with the features in chunks of one batch of 4, each batch held back 0.3 s: a window to kill it in.
KILLABLE = """
import sys, time
from cnnlab.backbones import embedding_cache
from cnnlab.runs import embeddings, photo_stream, photos
embedding_cache.CHUNK_ROWS = photo_stream.BATCH = 4
call = embeddings.Embedder.__call__
embeddings.Embedder.__call__ = lambda self, x, flip=False: time.sleep(0.3) or call(self, x, flip)
options = photos.PhotoOptions(steps=("lite0",), flip=False)
photos.train_photos(sys.argv[1], sys.argv[2], options=options, progress=False)
"""


@pytest.mark.slow
def test_a_run_killed_during_feature_extraction_resumes_to_the_same_model(photos, tmp_path):
    from safetensors.torch import load_file

    def start(cache, out):
        env = {**os.environ, "CNNLAB_DATA": str(cache)}
        return subprocess.Popen([sys.executable, "-c", KILLABLE, str(photos), str(out)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # photos changed in the last RACY_NS are keyed by content too (embedding_cache.file_key): let them age first,
    # so the killed run's rows and the resumed run's lookups use the same keys
    newest = max(os.stat(p).st_ctime_ns for p in photos.rglob("*.jpg"))
    time.sleep(max(0.0, (newest + RACY_NS - time.time_ns()) / 1e9 + 0.1))
    chunks = tmp_path / "cache" / "embeddings"
    killed = start(tmp_path / "cache", tmp_path / "killed")
    deadline = time.monotonic() + 120
    while not list(chunks.glob("*/*.npz")) and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=60)
    assert 1 <= len(list(chunks.glob("*/*.npz"))) < 6 and not (tmp_path / "killed").exists()  # part-way
    runs = {}
    for name, cache in (("resumed", tmp_path / "cache"), ("fresh", tmp_path / "fresh-cache")):
        out, err = start(cache, tmp_path / name).communicate(timeout=300)
        assert (tmp_path / name / "model.safetensors").is_file(), err
        runs[name] = (out, load_file(tmp_path / name / "model.safetensors"))
    said = next(line for line in runs["resumed"][0].splitlines() if line.startswith("features:"))
    computed, cached = (int(n) for n in re.search(r"(\d+) computed, (\d+) from the cache", said).groups())
    assert computed + cached == 24 and 0 < computed < 24  # the resumed run read back what the killed one wrote
    resumed, fresh = runs["resumed"][1], runs["fresh"][1]
    assert resumed.keys() == fresh.keys() and all(torch.equal(resumed[k], fresh[k]) for k in fresh)


def test_mirror_images_are_a_candidate_on_the_same_files(photos, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "cache"))
    said: list[str] = []
    options = transfer.PhotoOptions(steps=("lite0", "flip"), min_seconds=1e9)  # no budget: both run
    transfer.train_photos(photos, tmp_path / "run", options=options, say=said.append, progress=False)
    features = [line for line in said if line.startswith("features:")]
    assert len(features) == 2 and "of 24 photos: 24 computed" in features[0]
    assert "of 24 photos and their mirror images: 24 computed" in features[1]
    candidates = json.loads((tmp_path / "run" / "config.json").read_text())["transfer"]["candidates"]
    assert [(c["backbone"], c["flip"]) for c in candidates] == [("lite0", False), ("lite0", True)]
    assert sum("<- chosen" in line for line in said) == 1
