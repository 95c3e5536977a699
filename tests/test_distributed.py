"""Multi-process training: `cnnlab train --nproc 2` (torchrun, gloo, 127.0.0.1) gives the single-process
result for the same global batch, and every rank ends with the same weights."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cnnlab.datasets.registry import load
from cnnlab.runs import run_folder
from cnnlab.spec import compact
from cnnlab.train.checkpoint_file import read_checkpoint
from cnnlab.train.checkpoints import CHECKPOINT_FILE
from cnnlab.train.config import TrainConfig
from cnnlab.train.distributed import Distributed

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.mark.parametrize("world, n", [(2, 64), (2, 37), (3, 10), (4, 4)])
def test_shards_are_disjoint_and_cover_the_global_batch(world, n):
    batch = torch.randperm(1000)[:n]
    shards = [Distributed(rank, world, rank, "gloo") for rank in range(world)]
    parts = [d.shard(batch) for d in shards]
    assert sorted(torch.cat(parts).tolist()) == sorted(batch.tolist())
    assert sum(d.share for d in shards) == pytest.approx(1.0)
    for d, part in zip(shards, parts):
        assert d.share == len(part) / n  # the weight each rank's mean gradient gets


def test_batches_too_small_for_the_processes_are_refused_before_training():
    d = Distributed(0, 4, 0, "gloo")
    d.check_batches(1000, 100)
    d.check_batches(1005, 100)  # a last batch of 5 images: one or two per process
    with pytest.raises(ValueError, match="leaves a batch of 2 images, too few for 4 processes"):
        d.check_batches(1002, 100)
    with pytest.raises(ValueError, match="too few for 4 processes"):
        d.check_batches(1000, 3)


SPEC = "in28x28x1 conv6k3:relu max2 flatten dense10:softmax"
ARGS = ["--model", SPEC, "--subset", "2008", "--batch-size", "16", "--epochs", "2", "--device", "cpu",
        "--precision", "fp32", "--quiet"]  # 2008 % 16 = 8: a ragged last batch, split 4 + 4


def cnnlab(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "cnnlab", "train", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "run"
    proc = cnnlab(*ARGS, "--nproc", "2", "--out", str(out), "--checkpoint-every", "7")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    assert f"run saved to {out}" in stdout and stdout.count("test accuracy") == 1  # rank 0 reports
    return out


@pytest.mark.slow  # real processes (torchrun, signals): an integration test
def test_two_processes_train_the_single_process_model(two_process_run, tmp_path):
    data = load("mnist")
    data = dataclasses.replace(data, x_train=data.x_train[:2008], y_train=data.y_train[:2008])
    _, history, _ = run_folder.train_run(data, compact.parse(SPEC), TrainConfig(epochs=2, batch_size=16, device="cpu", precision="fp32"),
                                   tmp_path / "single", figures=False)
    got, want = load_file(two_process_run / "model.safetensors"), load_file(tmp_path / "single" / "model.safetensors")
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-5)
    saved = json.loads((two_process_run / "history.json").read_text())
    assert saved["loss"] == pytest.approx(history.history["loss"], rel=1e-4)
    assert saved["accuracy"] == pytest.approx(history.history["accuracy"], abs=2 / 2008)

    distributed = json.loads((two_process_run / "config.json").read_text())["distributed"]
    assert distributed["world_size"] == 2 and distributed["backend"] == "gloo"
    assert distributed["global_batch_size"] == 16 and distributed["batch_size_per_process"] == 8
    assert distributed["max_weight_difference_between_ranks"] == 0.0
    assert not two_process_run.with_name("run.partial").exists()


@pytest.mark.slow  # real processes (torchrun, signals): an integration test
def test_two_processes_stopped_by_ctrl_c_resume_to_the_same_weights(two_process_run, tmp_path):
    out = tmp_path / "run"
    checkpoint = out.with_name("run.partial") / CHECKPOINT_FILE
    proc = cnnlab(*ARGS, "--nproc", "2", "--out", str(out), "--checkpoint-every", "10")
    deadline = time.monotonic() + 120
    while not checkpoint.exists():  # the first checkpoint: training is under way
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)  # to the launcher, which passes it on to torchrun and the workers
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert stderr.count("checkpoint saved in") == 1  # rank 0 says it, the other rank stays quiet
    meta = read_checkpoint(checkpoint.read_bytes(), "")[1]
    assert meta["world_size"] == 2 and (meta["epoch"], meta["step"]) < (2, 0)

    proc = cnnlab("--resume", str(out), "--nproc", "2")
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    got, want = load_file(out / "model.safetensors"), load_file(two_process_run / "model.safetensors")
    for key in want:
        assert torch.equal(got[key], want[key]), key
