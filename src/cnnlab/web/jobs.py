"""One training job at a time in a background thread; its progress is a list of events the page streams."""
from __future__ import annotations

import itertools
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnlab.datasets.dataset import Dataset
from cnnlab.runs import run_folder
from cnnlab.spec.layers import ModelSpec
from cnnlab.spec.memory import check_memory
from cnnlab.train.config import TrainConfig
from cnnlab.train.short_runs import near_chance_warning

FINAL = ("done", "error")
POINTS_PER_EPOCH = 25  # running loss/accuracy points sent per epoch: a smooth live curve, little overhead


class Busy(RuntimeError):
    """A training job is already running."""


class NotRunning(RuntimeError):
    """Stop was asked for, but no job is running."""


@dataclass
class Job:
    """A training run in progress: its events (dicts with 'event' and 'id') and a stop switch."""
    id: int
    run: Path
    events: list[dict[str, Any]] = field(default_factory=list)
    stop_requested: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def emit(self, event: str, **data: Any) -> None:
        with self._lock:
            self.events.append({"event": event, "id": len(self.events), "time": time.time(), **data})

    def since(self, start: int) -> list[dict[str, Any]]:
        with self._lock:
            return self.events[start:]

    @property
    def state(self) -> str:
        with self._lock:
            last = self.events[-1]["event"] if self.events else "start"
        return last if last in FINAL else "running"


class Trainer:
    """Starts `run_folder.train_run` in a thread, refusing a second job while one runs."""

    def __init__(self) -> None:
        self.job: Job | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self, data: Dataset, spec: ModelSpec, config: TrainConfig, out: Path, model_name: str) -> Job:
        check_memory(spec, config.batch_size, True, "training")  # refused with a 400, before a thread starts
        with self._lock:
            if self.job is not None and self.job.state == "running":
                raise Busy(f"busy: run {self.job.run.name} is training; stop it or wait until it finishes")
            job = Job(next(self._ids), out)
            job.emit("start", run=out.name, data=data.name, model=model_name, epochs=config.epochs,
                     batch_size=config.batch_size, train_images=len(data.x_train), test_images=len(data.x_test))
            self.job = job
            self._thread = threading.Thread(target=self._work, args=(job, data, spec, config, model_name),
                                            name=f"cnnlab-train-{job.id}", daemon=True)
            self._thread.start()
            return job

    def _work(self, job: Job, data: Dataset, spec: ModelSpec, config: TrainConfig, model_name: str) -> None:
        def on_step(epoch: int, step: int, logs: dict[str, float]) -> None:
            job.emit("step", epoch=epoch + 1, step=step, steps=int(logs["steps"]),
                     loss=logs["loss"], accuracy=logs["accuracy"])

        def on_epoch(epoch: int, logs: dict[str, float]) -> None:
            job.emit("epoch", epoch=epoch + 1, **logs)

        steps = math.ceil(len(data.x_train) / config.batch_size)
        try:
            folder, history, evaluation = run_folder.train_run(
                data, spec, config, job.run, model_name=model_name, on_step=on_step, on_epoch=on_epoch,
                should_stop=job.stop_requested.is_set, step_every=max(1, steps // POINTS_PER_EPOCH))
        except Exception as exc:  # noqa: BLE001 - any failure ends the job; the page shows why
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            job.emit("error", error=message)
            return
        warning = near_chance_warning((history.history.get("accuracy") or [None])[-1], evaluation.accuracy,
                                      evaluation.y_true)
        job.emit("done", run=folder.name, epochs=len(history.epoch), stopped=job.stop_requested.is_set(),
                 test_accuracy=evaluation.accuracy, test_loss=evaluation.loss, warning=warning)

    def stop(self) -> Job:
        with self._lock:
            if self.job is None or self.job.state != "running":
                raise NotRunning("no training is running")
            self.job.stop_requested.set()
            return self.job

    def shutdown(self, timeout: float = 30.0) -> None:
        """Ask a running job to stop and wait for it, so its run folder is finished or never appears."""
        if self.job is not None:
            self.job.stop_requested.set()
        if self._thread is not None:
            self._thread.join(timeout)
