"""Crash-safe runs: a run stopped anywhere (Ctrl-C, SIGKILL, a failed write, a diverging loss) resumes
to exactly the weights of an uninterrupted run, and the checkpoint on disk is always a good one."""
from __future__ import annotations

import json
import os
import pickle
import resource
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnlab import cli
from cnnlab.datasets.registry import load
from cnnlab.runs import run_folder
from cnnlab.runs.model_file import ModelFileError
from cnnlab.spec import compact
from cnnlab.spec.build import build, keras_init_
from cnnlab.train.checkpoint_file import read_checkpoint
from cnnlab.train.checkpoints import CHECKPOINT_FILE, Checkpointer, CheckpointError, TrainingInterrupted, partial_folder
from cnnlab.train.config import TrainConfig
from cnnlab.train.fit import fit

SRC = Path(__file__).resolve().parents[1] / "src"
SPEC = "in28x28x1 conv4k3:relu max2 flatten drop0.25 dense10:softmax"


@pytest.fixture(scope="module")
def mnist():
    return load("mnist")


def train(mnist, config: TrainConfig, spec: str = SPEC, checkpoint: Checkpointer | None = None, stop_at=None,
          x=None) -> tuple[dict[str, torch.Tensor], dict]:
    """fit() a fresh Keras-initialised module on 1,000 MNIST images; `stop_at` (epoch, step) asks it to stop there."""
    module = build(compact.parse(spec))
    keras_init_(module, config.seed)

    def on_step(epoch, step, logs):
        if (epoch, step) == stop_at:
            checkpoint.stop_requested = True  # what the Ctrl-C handler does

    history = fit(module, mnist.x_train[:1000] if x is None else x, mnist.y_train[:1000], config, checkpoint=checkpoint,
                  on_step=on_step, step_every=1)
    logs = {k: v for k, v in history.history.items() if k != "seconds"}
    return module.state_dict(), {"logs": logs, "epoch": history.epoch, "stopped_early": history.stopped_early,
                                 "best_epoch": history.best_epoch}


CASES = {  # config, spec, where to stop (epoch index, steps done)
    "adam-onecycle-dropout-mid-epoch": (TrainConfig(epochs=3, batch_size=64, device="cpu"), SPEC, (1, 5)),
    "sgd-cosine-batchnorm-epoch-end": (TrainConfig(epochs=3, batch_size=100, optimizer="sgd", schedule="cosine",
                                                   device="cpu"), "in28x28x1 conv4k3 bn act:relu max2 flatten dense10", (0, 10)),
    "rmsprop-early-stopping-best-weights": (TrainConfig(epochs=4, batch_size=128, optimizer="rmsprop", lr=3e-3,
                                                        validation_split=0.2, early_stopping_patience=1, monitor="val_loss",
                                                        label_smoothing=0.1, device="cpu"), SPEC, (2, 3)),
}


@pytest.mark.parametrize("case", CASES)
def test_resume_ends_with_the_weights_of_an_uninterrupted_run(mnist, tmp_path, case, monkeypatch):
    config, spec, stop_at = CASES[case]
    expected_state, expected_history = train(mnist, config, spec)

    first = Checkpointer.create(tmp_path / "run", {"note": "test"}, every=4)
    with pytest.raises(TrainingInterrupted, match="--resume"):
        train(mnist, config, spec, first, stop_at)
    saved = read_checkpoint((first.path).read_bytes(), "test")[1]
    epoch, step = stop_at[0], stop_at[1] + 1  # the request arrives during a step; the next step boundary saves
    assert (saved["epoch"], saved["step"]) == ((epoch, step) if step < first._steps_per_epoch else (epoch + 1, 0))

    def no_unpickling(*args, **kwargs):
        raise AssertionError("a checkpoint must load without pickle")
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "Unpickler", no_unpickling)
    # a temporary file left by a write that was cut short must not confuse the resume
    (first.folder / f".{CHECKPOINT_FILE}.abc123.tmp").write_bytes(b"half a checkpoint")
    resumed, info = Checkpointer.open(tmp_path / "run")
    assert info == {"note": "test"}
    state, history = train(mnist, config, spec, resumed)
    assert history == expected_history
    for key in expected_state:
        assert torch.equal(state[key], expected_state[key]), key


def test_diverging_loss_stops_naming_epoch_and_step_and_keeps_the_last_good_checkpoint(mnist, tmp_path):
    x = mnist.x_train[:1000].astype(np.float32) / 255
    x[700] = 3e38  # finite, so it passes the input check; a linear model's logits overflow to inf - inf = NaN
    checkpoint = Checkpointer.create(tmp_path / "run", {}, every=1)
    with pytest.raises(FloatingPointError, match=r"by epoch 1, step \d+; the last good checkpoint \(epoch 1, step \d+\)"):
        train(mnist, TrainConfig(epochs=2, batch_size=50, optimizer="sgd", device="cpu"), "in28x28x1 flatten dense10",
              checkpoint=checkpoint, x=x)
    tensors, meta = read_checkpoint(checkpoint.path.read_bytes(), "test")
    weights = {k: t for k, t in tensors.items() if k.startswith(("model.", "optimizer."))}
    assert weights and all(bool(torch.isfinite(t).all()) for t in weights.values())
    assert (meta["epoch"], meta["step"]) == checkpoint.saved


def test_nan_in_the_images_is_refused_before_training(mnist):
    x = mnist.x_train[:100].astype(np.float32) / 255
    x[7, 3, 3, 0] = np.nan
    x[42, 0, 0, 0] = np.inf
    module = build(compact.parse(SPEC))
    with pytest.raises(ValueError, match=r"2 of 100, the first at index 7"):
        fit(module, x, mnist.y_train[:100], TrainConfig(epochs=1, device="cpu"))


@contextmanager
def file_size_limit(limit: int):
    """Writes past `limit` bytes fail with EFBIG, as on a full disk (Python ignores SIGXFSZ)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_no_room_for_checkpoints_fails_before_training(tmp_path):
    with file_size_limit(50_000), pytest.raises(CheckpointError, match="cannot write checkpoints in .*run.partial"):
        Checkpointer.create(tmp_path / "run", {}, expected_bytes=2_000_000)
    assert not partial_folder(tmp_path / "run").exists()
    with pytest.raises(CheckpointError, match="MB are free"):
        Checkpointer.create(tmp_path / "run2", {}, expected_bytes=10**15)


def test_a_failed_write_keeps_the_previous_checkpoint(mnist, tmp_path):
    checkpoint = Checkpointer.create(tmp_path / "run", {}, every=0)
    train(mnist, TrainConfig(epochs=1, batch_size=100, device="cpu"), checkpoint=checkpoint)
    before = checkpoint.path.read_bytes()
    with file_size_limit(len(before) // 2), pytest.raises(CheckpointError, match=r"previous checkpoint \(the end of epoch 1\) is intact"):
        checkpoint.save(checkpoint_state(epoch=1))
    assert checkpoint.path.read_bytes() == before
    assert sorted(p.name for p in checkpoint.folder.iterdir() if p.name != ".lock") == [CHECKPOINT_FILE, "run.json"]  # no temp file left


def checkpoint_state(epoch: int) -> dict:
    from cnnlab.train.checkpoint_file import LoopState
    return LoopState(epoch=epoch, step=0, order=None, loss_sum=1.0, correct=0, seen=0, best=None, best_state=None, waited=0)


def test_damaged_checkpoints_are_model_file_errors(mnist, tmp_path):
    checkpoint = Checkpointer.create(tmp_path / "run", {}, every=0)
    train(mnist, TrainConfig(epochs=1, batch_size=100, device="cpu"), checkpoint=checkpoint)
    good = checkpoint.path.read_bytes()
    checkpoint.path.write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelFileError, match="not a readable cnnlab checkpoint"):
        Checkpointer.open(tmp_path / "run")
    checkpoint.path.write_bytes(good)
    resumed, _ = Checkpointer.open(tmp_path / "run")
    with pytest.raises(ModelFileError, match="steps per epoch"):  # the batch size changed since
        train(mnist, TrainConfig(epochs=2, batch_size=50, device="cpu"), checkpoint=resumed)
    resumed, _ = Checkpointer.open(tmp_path / "run")
    with pytest.raises(ModelFileError, match="do not fit the model"):
        train(mnist, TrainConfig(epochs=2, batch_size=100, device="cpu"), spec="in28x28x1 flatten dense10", checkpoint=resumed)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_checkpoint_reader_loads_or_raises_model_file_error(tmp_path, data):
    good = _small_checkpoint(tmp_path)
    raw = data.draw(st.one_of(st.binary(max_size=300), st.builds(lambda cut, flips: _damage(good, cut, flips),
                                                                  st.integers(0, len(good)),
                                                                  st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=5))))
    try:
        read_checkpoint(raw, "fuzz")
    except ModelFileError:
        pass


def _damage(raw: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    buf = bytearray(raw[:cut])
    for pos, value in flips:
        if pos < len(buf):
            buf[pos] = value
    return bytes(buf)


_CACHE: dict[str, bytes] = {}


def _small_checkpoint(tmp_path: Path) -> bytes:
    if "raw" not in _CACHE:
        checkpoint = Checkpointer.create(tmp_path / "small", {}, every=0)
        x, y = np.zeros((20, 28, 28, 1), np.uint8), np.arange(20) % 10
        module = build(compact.parse("in28x28x1 flatten dense10"))
        fit(module, x, y, TrainConfig(epochs=1, batch_size=2, device="cpu"), checkpoint=checkpoint)
        _CACHE["raw"] = checkpoint.path.read_bytes()
    return _CACHE["raw"]


def test_resume_refuses_new_settings_and_finished_runs(tmp_path, capsys):
    assert cli.main(["train", "--resume", str(tmp_path / "nothing"), "--epochs", "5"]) == 1
    assert "drop --epochs" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(tmp_path / "nothing")]) == 1
    assert "no interrupted run" in capsys.readouterr().err
    (tmp_path / "done").mkdir()
    assert cli.main(["train", "--resume", str(tmp_path / "done")]) == 1
    assert "already complete" in capsys.readouterr().err


# --- a real training process, stopped by Ctrl-C, then killed, then finished ------------------------------
RUN_ARGS = ["--model", SPEC, "--subset", "3000", "--batch-size", "10", "--epochs", "3", "--device", "cpu",
            "--seed", "3", "--quiet"]


def cnnlab(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.Popen([sys.executable, "-m", "cnnlab", "train", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(path: Path, proc: subprocess.Popen, newer_than: tuple[int, int] = (-1, 0),
                        timeout: float = 120) -> tuple[int, int]:
    """Poll the checkpoint until it is past `newer_than` and mid-epoch; (epoch, step)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            meta = read_checkpoint(path.read_bytes(), str(path))[1]
            where = (meta["epoch"], meta["step"])
            if where > newer_than and meta["step"] > 0:
                return where
        except (FileNotFoundError, ModelFileError):
            pass
        time.sleep(0.01)
    raise TimeoutError(f"no checkpoint past {newer_than} at {path}")


@pytest.mark.slow  # real processes (torchrun, signals): an integration test
def test_ctrl_c_then_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_weights(mnist, tmp_path):
    out = tmp_path / "run"
    ckpt = partial_folder(out) / CHECKPOINT_FILE
    proc = cnnlab(*RUN_ARGS, "--out", str(out), "--checkpoint-every", "25")
    wait_for_checkpoint(ckpt, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "checkpoint saved" in err and f"--resume {out}" in err
    stopped = read_checkpoint(ckpt.read_bytes(), "")[1]

    # Resume, checkpointing after every step, and kill -9 right after a fresh one: most likely mid-write.
    proc = cnnlab("--resume", str(out), "--checkpoint-every", "1")
    where = wait_for_checkpoint(ckpt, proc, newer_than=(stopped["epoch"] + 1, 0))
    proc.kill()
    proc.communicate(timeout=30)
    assert not out.exists()
    killed = read_checkpoint(ckpt.read_bytes(), "")[1]  # intact whatever the kill interrupted
    assert (killed["epoch"], killed["step"]) >= where and killed["step"] > 0

    proc = cnnlab("--resume", str(out))
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert not partial_folder(out).exists() and (out / "model.safetensors").is_file()

    data = dataclass_subset(mnist, 3000)
    spec = compact.parse(SPEC)
    config = TrainConfig(epochs=3, batch_size=10, device="cpu", seed=3)
    _, history, _ = run_folder.train_run(data, spec, config, tmp_path / "reference", figures=False)
    from safetensors.torch import load_file
    got, want = load_file(out / "model.safetensors"), load_file(tmp_path / "reference" / "model.safetensors")
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), key
    saved = json.loads((out / "history.json").read_text())
    assert (saved["loss"], saved["accuracy"]) == (history.history["loss"], history.history["accuracy"])


def dataclass_subset(data, n: int):
    import dataclasses
    return dataclasses.replace(data, x_train=data.x_train[:n], y_train=data.y_train[:n])
