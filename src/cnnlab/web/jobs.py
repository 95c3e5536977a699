"""One training job at a time in a background thread; its progress is a list of events the page streams."""
from __future__ import annotations

import itertools
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnlab.runs import run_folder
from cnnlab.runs.photos import train_photos
from cnnlab.spec.memory import check_memory
from cnnlab.train.fit import History
from cnnlab.train.plan import TrainPlan, plan_training
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


def _start_info(plan: TrainPlan) -> dict[str, Any]:
    """What the page shows when a job starts; a transfer job's length is decided as it goes (None)."""
    data, config = plan.data, plan.config
    return {"data": data.name if data is not None else Path(plan.choices.data).name, "model": plan.model_name,
            "transfer": plan.transfer, "epochs": config.epochs if config else None,
            "batch_size": config.batch_size if config else None,
            "train_images": len(data.x_train) if data is not None else None,
            "test_images": len(data.x_test) if data is not None else None}


class Trainer:
    """Runs a training plan in a thread (`run_folder.train_run`, or `train_photos` for a transfer plan),
    refusing a second job while one runs."""

    def __init__(self) -> None:
        self.job: Job | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self, plan: TrainPlan, out: Path) -> Job:
        """Run `plan` (`cnnlab.train.plan`) into run folder `out` in a thread; Busy while another job runs."""
        if not plan.transfer:
            assert plan.spec is not None and plan.config is not None
            check_memory(plan.spec, plan.config.batch_size, True, "training")  # refused before a thread starts
        with self._lock:
            if self.job is not None and self.job.state == "running":
                raise Busy(f"busy: run {self.job.run.name} is training; stop it or wait until it finishes")
            job = Job(next(self._ids), out)
            job.emit("start", run=out.name, **_start_info(plan))
            for line in plan.reasons:
                job.emit("log", line=line)
            self.job = job
            self._thread = threading.Thread(target=self._work, args=(job, plan), name=f"cnnlab-train-{job.id}",
                                            daemon=True)
            self._thread.start()
            return job

    def _work(self, job: Job, plan: TrainPlan) -> None:
        try:
            if plan.transfer:
                result = train_photos(plan.choices.data, job.run, seed=plan.choices.seed, color=plan.choices.color,
                                      fine_tune_options=plan.choices.fine_tune_options(),
                                      say=lambda line: job.emit("log", line=line), device=plan.choices.device or "auto")
                if result is None:  # the photos turned out gray: from scratch, as the CLI does
                    plan = plan_training(plan.choices, gray=True)
                    assert plan.spec is not None and plan.config is not None
                    check_memory(plan.spec, plan.config.batch_size, True, "training")  # as start() does
                    for line in plan.reasons:
                        job.emit("log", line=line)
            if not plan.transfer:
                result = self._train(job, plan)
        except Exception as exc:  # noqa: BLE001 - any failure ends the job; the page shows why
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            job.emit("error", error=message)
            return
        assert result is not None
        folder, history, evaluation = result
        warning = near_chance_warning((history.history.get("accuracy") or [None])[-1], evaluation.accuracy,
                                      evaluation.y_true)
        job.emit("done", run=folder.name, epochs=len(history.epoch),  # a transfer run is not stopped midway
                 stopped=job.stop_requested.is_set() and not plan.transfer,
                 test_accuracy=evaluation.accuracy, test_loss=evaluation.loss, warning=warning)

    @staticmethod
    def _train(job: Job, plan: TrainPlan) -> tuple[Path, History, run_folder.Evaluation | None]:
        def on_step(epoch: int, step: int, logs: dict[str, float]) -> None:
            job.emit("step", epoch=epoch + 1, step=step, steps=int(logs["steps"]),
                     loss=logs["loss"], accuracy=logs["accuracy"])

        def on_epoch(epoch: int, logs: dict[str, float]) -> None:
            job.emit("epoch", epoch=epoch + 1, **logs)

        data, config = plan.data, plan.config
        assert data is not None and plan.spec is not None and config is not None
        steps = math.ceil(len(data.x_train) / config.batch_size)
        return run_folder.train_run(data, plan.spec, config, job.run, model_name=plan.model_name, on_step=on_step,
                                    on_epoch=on_epoch, should_stop=job.stop_requested.is_set,
                                    step_every=max(1, steps // POINTS_PER_EPOCH))

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
