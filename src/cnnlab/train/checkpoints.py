"""Crash-safe training: the loop's whole state in one safetensors file, replaced atomically, no pickle.

While a run trains, its folder is `runs/NAME.partial/` (`runs/NAME` appears only when training and
evaluation have succeeded, and the `.partial` folder is then removed):

    run.json                  what rebuilds the run: data, model spec, TrainConfig, model name
    checkpoint.safetensors    the latest good checkpoint

A checkpoint (its contents: cnnlab.train.checkpoint_file) is written to a temporary file, fsync'd and
renamed over the old one: a crash at any instant leaves the previous checkpoint or the new one. A
checkpoint is never written from a diverged state, so the one on disk is always the last good one.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch

from cnnlab.errors import ModelFileError
from cnnlab.fsutil import atomic_write_bytes, atomic_write_text
from cnnlab.train.checkpoint_file import LoopState, checkpoint_bytes, load_optimizer, prefixed, read_checkpoint
from cnnlab.train.reproducible import rng_state, set_rng_state

if TYPE_CHECKING:
    from cnnlab.train.distributed import Distributed

CHECKPOINT_FILE = "checkpoint.safetensors"
RUN_FILE = "run.json"
LOCK_FILE = ".lock"
PARTIAL = ".partial"
POLL_STEPS = 20  # how often distributed ranks agree on a stop request (one tiny all-reduce)


class CheckpointError(ValueError):
    """A checkpoint cannot be written (unwritable folder, disk full); the previous one is intact."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C or SIGTERM after saving a checkpoint; the message says how to resume."""


def position(epoch: int, step: int) -> str:
    """A checkpoint's place in words: (2, 0) is "the end of epoch 2", (2, 40) is "epoch 3, step 40"."""
    return f"the end of epoch {epoch}" if step == 0 else f"epoch {epoch + 1}, step {step}"


def partial_folder(out: str | os.PathLike) -> Path:
    """Where the run `out` lives while it trains."""
    out = Path(out)
    return out if out.name.endswith(PARTIAL) else out.with_name(out.name + PARTIAL)


def final_folder(run: str | os.PathLike) -> Path:
    run = Path(run)
    return run.with_name(run.name[:-len(PARTIAL)]) if run.name.endswith(PARTIAL) else run


# --- the object fit talks to ---------------------------------------------------------------------
class Checkpointer:
    """Saves `fit`'s state into a run's `.partial` folder after every epoch and every `every` steps,
    restores it on resume, and turns Ctrl-C / SIGTERM into "save, then stop"."""

    def __init__(self, folder: Path, *, every: int = 0, dist: "Distributed | None" = None,
                 resume_bytes: bytes | None = None):
        """`resume_bytes`: the checkpoint file to continue from (read by `Checkpointer.open`)."""
        check_every(every)
        self.folder, self.every, self.dist = Path(folder), every, dist
        self.stop_requested = False
        self.saved: tuple[int, int] | None = None  # (epoch, step) of the checkpoint on disk
        self._resume = read_checkpoint(resume_bytes, str(self.path)) if resume_bytes else None
        if self._resume is not None:
            self.saved = (self._resume[1].get("epoch"), self._resume[1].get("step"))
            self.saved_world_size = self._resume[1].get("world_size")
        self._objects: tuple[Any, ...] | None = None
        self._steps_per_epoch = 1
        self._lock = _lock(self.folder) if self.is_main and self.folder.is_dir() else None

    @property
    def path(self) -> Path:
        return self.folder / CHECKPOINT_FILE

    @property
    def is_main(self) -> bool:
        return self.dist is None or self.dist.is_main

    @classmethod
    def create(cls, out: str | os.PathLike, run_info: dict[str, Any], *, every: int = 0,
               dist: "Distributed | None" = None, expected_bytes: int = 0) -> "Checkpointer":
        """Make `out.partial/` with run.json, after checking that checkpoints will fit (before training)."""
        check_every(every)  # before the folder exists, so a bad value leaves nothing behind
        folder = partial_folder(out)
        error: Exception | None = None
        if (dist is None or dist.is_main) and folder.exists():
            error = FileExistsError(f"{folder} holds an interrupted run: continue it with "
                                    f"`cnnlab train --resume {final_folder(folder)}`, or remove it")
        elif dist is None or dist.is_main:
            try:
                folder.mkdir(parents=True)
                atomic_write_text(folder / RUN_FILE, json.dumps(run_info, indent=2) + "\n")
                _check_room(folder, expected_bytes)
            except OSError as exc:
                shutil.rmtree(folder, ignore_errors=True)
                error = CheckpointError(f"cannot write checkpoints in {folder}: {exc.strerror or exc}; "
                                        "free some space or choose another --out")
        if dist is not None and dist.any(error is not None) and error is None:
            error = CheckpointError(f"rank 0 cannot create {folder}")
        if error is not None:
            raise error
        return cls(folder, every=every, dist=dist)

    @classmethod
    def open(cls, run: str | os.PathLike, *, every: int = 0,
             dist: "Distributed | None" = None) -> tuple["Checkpointer", dict[str, Any]]:
        """The interrupted run `run` (NAME or NAME.partial): its Checkpointer and run.json.

        Rank 0 reads the files and sends them to the other ranks, so that resuming on several machines
        needs no shared file system.
        """
        folder = partial_folder(run)
        info_raw = ckpt_raw = b""
        error = None
        if dist is None or dist.is_main:
            try:
                info_raw = _read_run_file(folder)
                ckpt_raw = (folder / CHECKPOINT_FILE).read_bytes() if (folder / CHECKPOINT_FILE).is_file() else b""
                if (folder / CHECKPOINT_FILE).is_file() and not ckpt_raw:  # never a silent restart from scratch
                    raise ModelFileError(f"{folder / CHECKPOINT_FILE} is empty (0 bytes): the checkpoint is damaged; "
                                         f"the folder is kept; remove {folder} to train again from the start")
            except (ModelFileError, OSError) as exc:
                error = exc
        if dist is not None:
            if dist.any(error is not None):
                raise error or ModelFileError(f"rank 0 cannot read the interrupted run in {folder}")
            info_raw, ckpt_raw = dist.broadcast_bytes(info_raw), dist.broadcast_bytes(ckpt_raw)
        elif error is not None:
            raise error
        try:
            info = json.loads(info_raw)
        except (ValueError, RecursionError) as exc:
            raise ModelFileError(f"{folder / RUN_FILE}: not valid JSON ({exc})") from None
        if not isinstance(info, dict):
            raise ModelFileError(f"{folder / RUN_FILE}: expected a JSON object")
        return cls(folder, every=every, dist=dist, resume_bytes=ckpt_raw or None), info

    def attach(self, module: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any, gen: torch.Generator,
               history: Any, steps_per_epoch: int) -> LoopState | None:
        """Remember what to save; when resuming, load the checkpoint into them and return the loop's state."""
        self._objects = (module, opt, sched, gen, history)
        self._steps_per_epoch = steps_per_epoch
        if self._resume is None:
            return None
        tensors, meta = self._resume
        self._resume = None
        try:
            return self._restore(tensors, meta, module, opt, sched, gen, history, steps_per_epoch)
        except ModelFileError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
            raise ModelFileError(f"{self.path}: damaged checkpoint ({type(exc).__name__}: {exc})") from None

    def _restore(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], module: torch.nn.Module,
                 opt: torch.optim.Optimizer, sched: Any, gen: torch.Generator, history: Any,
                 steps_per_epoch: int) -> LoopState:
        if meta["steps_per_epoch"] != steps_per_epoch:
            raise ModelFileError(f"{self.path}: made with {meta['steps_per_epoch']} steps per epoch, now there are "
                                 f"{steps_per_epoch}: the data or the batch size changed since")
        try:
            module.load_state_dict(prefixed(tensors, "model."), strict=True)
        except RuntimeError as exc:
            raise ModelFileError(f"{self.path}: the weights do not fit the model: {str(exc).splitlines()[0]}") from None
        load_optimizer(opt, tensors, meta["optimizer"])
        sched.load_state_dict(meta["scheduler"])
        gen.set_state(tensors["generator"])
        saved_history = meta["history"]
        history.history = {k: [float(v) for v in vs] for k, vs in saved_history["history"].items()}
        history.epoch = [int(e) for e in saved_history["epoch"]]
        history.stopped_early, history.best_epoch = bool(saved_history["stopped_early"]), saved_history["best_epoch"]
        rank = self.dist.rank if self.dist else 0
        mine = prefixed(tensors, f"rank.{rank}.")
        if mine:
            set_rng_state({k[len("rng."):]: v for k, v in mine.items() if k.startswith("rng.")})
        else:  # a rank the checkpoint did not know (more processes than before): its own reproducible stream
            torch.manual_seed(torch.initial_seed() + rank)
        sums = mine.get("sums", torch.zeros(3, dtype=torch.float64)).tolist() if meta["step"] else [0.0, 0, 0]
        device = next(module.parameters()).device if any(True for _ in module.parameters()) else torch.device("cpu")
        best_state = ({k: v.to(device) for k, v in prefixed(tensors, "best.").items()}
                      if meta["has_best_state"] else None)
        self.saved = (meta["epoch"], meta["step"])
        return LoopState(meta["epoch"], meta["step"], tensors.get("order") if meta["step"] else None,
                         float(sums[0]), int(sums[1]), int(sums[2]), meta["best"], best_state, int(meta["waited"]),
                         bool(meta["finished"]))

    # --- called by fit at step and epoch boundaries ---------------------------------------------
    def step_done(self, epoch: int, step: int, state: Callable[[], dict[str, Any]]) -> None:
        """After each step: save every `every` steps; on a stop request save and raise TrainingInterrupted.

        After an epoch's last step nothing happens here: `epoch_done` follows and saves the whole epoch.
        """
        if step == self._steps_per_epoch:
            return
        global_step = epoch * self._steps_per_epoch + step
        stop = self.stop_requested
        if self.dist is not None:  # every rank must take the same decision, or the others wait forever
            stop = global_step % POLL_STEPS == 0 and self.dist.any(stop)
        if stop or (self.every and global_step % self.every == 0):
            self.save(LoopState(**state()))
        if stop:
            self._interrupted()

    def epoch_done(self, state: dict[str, Any]) -> None:
        """After each epoch (its logs in the history, early stopping updated): save; stop if asked to."""
        self.save(LoopState(**state))
        stop = self.dist.any(self.stop_requested) if self.dist is not None else self.stop_requested
        if stop:
            self._interrupted()

    def _interrupted(self) -> None:
        raise TrainingInterrupted(f"stopped at {position(*self.saved or (0, 0))}; checkpoint saved in {self.folder}; "
                                  f"continue with `cnnlab train --resume {final_folder(self.folder)}`")

    def save(self, state: LoopState) -> None:
        """Write `state` atomically (rank 0), refusing a diverged one; all ranks call this together."""
        if self._objects is None:
            raise RuntimeError("Checkpointer.save before attach()")
        module, opt, sched, gen, history = self._objects
        loss_sum = float(state.loss_sum)
        bad = not math.isfinite(loss_sum) or not all(bool(torch.isfinite(p).all()) for p in module.parameters())
        if self.dist is not None:
            bad = self.dist.any(bad)
        if bad:
            kept = (f"the last good checkpoint ({position(*self.saved)}) is kept in {self.folder}" if self.saved
                    else "no checkpoint had been saved yet")
            where = position(state.epoch, state.step) if state.step else f"epoch {state.epoch}, step {self._steps_per_epoch}"
            raise FloatingPointError(f"training diverged: the loss or the weights became NaN or infinite by {where}; "
                                     f"{kept}. Lower --lr, or look for extreme values in the data")
        mine = {f"rng.{k}": v for k, v in rng_state().items()}
        mine["sums"] = torch.tensor([loss_sum, float(state.correct), float(state.seen)], dtype=torch.float64)
        if self.dist is None:
            per_rank = [mine]
        else:
            gathered = {k: self.dist.gather(v) for k, v in sorted(mine.items())}
            per_rank = [{k: v[r] for k, v in gathered.items()} for r in range(self.dist.world_size)]
        error = None
        if self.is_main:
            try:
                atomic_write_bytes(self.path, checkpoint_bytes(module, opt, sched, gen, history, state, per_rank,
                                                               self._steps_per_epoch))
            except OSError as exc:
                error = exc
        if self.dist is not None and self.dist.any(error is not None) and error is None:
            error = OSError("rank 0 could not write it")
        if error is not None:
            kept = f"the previous checkpoint ({position(*self.saved)}) is intact" if self.saved \
                else "there is no earlier checkpoint"
            raise CheckpointError(f"cannot write the checkpoint {self.path}: {getattr(error, 'strerror', None) or error}; "
                                  f"{kept}; free some space and continue with "
                                  f"`cnnlab train --resume {final_folder(self.folder)}`")
        self.saved = (state.epoch, state.step)

    def finish(self) -> None:
        """The run folder is complete: the checkpoint folder is no longer needed."""
        if self.is_main:
            shutil.rmtree(self.folder, ignore_errors=True)
        if self._lock is not None:
            if _HELD.pop(os.path.realpath(self.folder), None) is not None:
                os.close(self._lock)
            self._lock = None

    @contextmanager
    def catch_signals(self) -> Iterator["Checkpointer"]:
        """Within the block, Ctrl-C and SIGTERM ask training to save and stop at the next step.

        A second Ctrl-C in a single process stops at once (the last checkpoint stays); distributed
        ranks ignore repeats, since torchrun forwards the signal the terminal already delivered.
        """
        if threading.current_thread() is not threading.main_thread():
            yield self  # signals can only be caught in the main thread; the caller's should_stop still works
            return

        def ask(signum: int, frame: Any) -> None:
            if self.stop_requested and signum == signal.SIGINT and self.dist is None:
                raise KeyboardInterrupt
            self.stop_requested = True

        previous = {s: signal.signal(s, ask) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def _lock(folder: Path) -> int | None:
    """Own the `.partial` folder: an exclusive flock on its lock file, held until `finish` or exit."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; one process at a time is then the user's care
        return None
    key = os.path.realpath(folder)
    if key in _HELD:  # this process owns it already (an earlier Checkpointer of the same run, in one session)
        return _HELD[key]
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise BlockingIOError(f"{folder} is being trained by another process right now; "
                              "wait for it to finish or stop it before resuming") from None
    _HELD[key] = fd
    return fd


_HELD: dict[str, int] = {}  # realpath of a .partial folder -> the lock this process holds on it


def check_every(every: int) -> None:
    if not isinstance(every, int) or isinstance(every, bool) or not 0 <= every <= 10**12:
        raise ValueError(f"--checkpoint-every must be 0 (epoch ends only) or a number of steps >= 1, got {every!r}")


def _read_run_file(folder: Path) -> bytes:
    if not folder.is_dir():
        raise ModelFileError(f"no interrupted run at {folder}: `--resume` takes a run that was stopped before it finished")
    path = folder / RUN_FILE
    if not path.is_file():
        raise ModelFileError(f"{folder} has no {RUN_FILE}: it is not a cnnlab run in progress")
    return path.read_bytes()


def _check_room(folder: Path, expected_bytes: int) -> None:
    """Raise OSError now if a checkpoint of about `expected_bytes` (twice: old + new) cannot be written."""
    free = shutil.disk_usage(folder).free
    if free < 2 * expected_bytes:
        raise OSError(28, f"checkpoints need about {2 * expected_bytes / 1e6:,.1f} MB, {free / 1e6:,.1f} MB are free")
    probe = folder / ".probe"
    try:  # a real write finds what free space does not show: quotas, file size limits, read-only mounts
        with open(probe, "wb") as f:
            f.write(os.urandom(min(expected_bytes, 8 << 20)))
            f.flush()
            os.fsync(f.fileno())
    finally:
        probe.unlink(missing_ok=True)
