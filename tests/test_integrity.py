"""Integrity of model files and checkpoints: SHA-256 of the tensor bytes, finite weights, damaged checkpoints kept."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from cnnlab.runs import model_file
from cnnlab.spec import layers as L
from cnnlab.spec.build import build
from cnnlab.tensor_file import tensor_digest
from cnnlab.train.checkpoints import CHECKPOINT_FILE, RUN_FILE, Checkpointer, partial_folder

SPEC = L.ModelSpec([L.Flatten(), L.Dense(3)], (4, 4, 1))


def _save(tmp_path):
    torch.manual_seed(0)
    return model_file.save_model(tmp_path / "m.safetensors", SPEC, build(SPEC), ["a", "b", "c"], {})


def _rewrite(path, change, drop_hash=False):
    raw = path.read_bytes()
    tensors = st_load(raw)
    meta = json.loads(json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])["__metadata__"]["cnnlab"])
    change(tensors)
    if drop_hash:
        meta.pop("sha256")
        meta.pop("metadata_sha256", None)  # as a file written before the digests
    path.write_bytes(st_save(tensors, metadata={"cnnlab": json.dumps(meta)}))


def test_model_file_round_trip_carries_a_digest(tmp_path):
    path = _save(tmp_path)
    raw = path.read_bytes()
    meta = json.loads(json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])["__metadata__"]["cnnlab"])
    assert meta["sha256"] == tensor_digest(model_file.read_model(path).state)


def test_altered_weights_are_refused_naming_the_file(tmp_path):
    path = _save(tmp_path)
    _rewrite(path, lambda t: t["dense.linear.weight"].add_(1e-3))
    with pytest.raises(model_file.ModelFileError, match=r"m\.safetensors: the tensors do not match the file's SHA-256"):
        model_file.read_model(path)


def test_old_files_without_digest_still_load(tmp_path):
    path = _save(tmp_path)
    _rewrite(path, lambda t: None, drop_hash=True)
    assert model_file.read_model(path).class_names == ["a", "b", "c"]


def test_nan_weights_refused_naming_the_tensor(tmp_path):
    path = _save(tmp_path)
    _rewrite(path, lambda t: t["dense.linear.bias"].__setitem__(0, float("nan")), drop_hash=True)
    with pytest.raises(model_file.ModelFileError, match=r"tensor 'dense\.linear\.bias' holds NaN"):
        model_file.read_model(path)


def test_zero_byte_checkpoint_is_an_error_and_keeps_the_folder(tmp_path):
    folder = partial_folder(tmp_path / "run")
    folder.mkdir()
    (folder / RUN_FILE).write_text("{}")
    (folder / CHECKPOINT_FILE).write_bytes(b"")
    with pytest.raises(model_file.ModelFileError, match="empty"):
        Checkpointer.open(tmp_path / "run")
    assert (folder / CHECKPOINT_FILE).exists()


def test_damaged_checkpoint_digest(tmp_path, small):
    from cnnlab.train.config import TrainConfig
    from cnnlab.train.fit import fit
    x, y = small[0][:64], small[1][:64]
    spec = L.ModelSpec([L.Flatten(), L.Dense(10)], x.shape[1:])
    ckpt = Checkpointer.create(tmp_path / "run", {"spec": spec.to_dict()})
    fit(build(spec), x, y, TrainConfig(epochs=1, batch_size=32), checkpoint=ckpt)
    path = ckpt.path
    raw = path.read_bytes()
    tensors = st_load(raw)
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])["__metadata__"]
    tensors["model.dense.linear.bias"] = tensors["model.dense.linear.bias"] + 1
    path.write_bytes(st_save(tensors, metadata=header))
    with pytest.raises(model_file.ModelFileError, match="SHA-256"):
        Checkpointer.open(tmp_path / "run")
    assert path.exists()


def test_second_process_cannot_own_a_partial_run(tmp_path):
    """A `.partial` run is locked by the process training it: a second resume is refused while it lives."""
    import subprocess
    import sys
    import time as _time
    folder = partial_folder(tmp_path / "run")
    folder.mkdir()
    (folder / RUN_FILE).write_text("{}")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(folder / '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(BlockingIOError, match="being trained by another process"):
            Checkpointer.open(tmp_path / "run")
    finally:
        holder.kill()
        holder.wait()
    _time.sleep(0.05)
    ckpt, _ = Checkpointer.open(tmp_path / "run")  # the owner is gone: the lock is free
    ckpt.finish()


def test_stale_temporary_folders_are_removed(tmp_path):
    import os
    import time as _time

    from cnnlab.fsutil import atomic_dir
    old, fresh = tmp_path / ".run.abc123.tmp", tmp_path / ".run.def456.tmp"
    old.mkdir()
    fresh.mkdir()
    os.utime(old, (_time.time() - 7200, _time.time() - 7200))
    with atomic_dir(tmp_path / "run") as tmp:
        (tmp / "x").write_text("1")
    assert not old.exists() and fresh.exists()  # a recent one may be another live process's write
    assert (tmp_path / "run" / "x").read_text() == "1"
