"""Training progress for people: a live rich bar on a terminal, one plain line per epoch otherwise."""
from __future__ import annotations

import sys
import time
from typing import Callable

from cnnlab.train.fit import EpochCallback, StepCallback

Callbacks = tuple[StepCallback | None, EpochCallback | None, Callable[[], None]]


def epoch_line(epoch: int, epochs: int, logs: dict[str, float]) -> str:
    parts = [f"epoch {epoch + 1}/{epochs}", f"loss {logs['loss']:.4f}", f"accuracy {logs['accuracy']:.4f}"]
    if "val_loss" in logs:
        parts += [f"val_loss {logs['val_loss']:.4f}", f"val_accuracy {logs['val_accuracy']:.4f}"]
    parts.append(f"{logs.get('seconds', 0):.1f}s")
    return "  ".join(parts)


def progress_callbacks(verbose: int | str, epochs: int, stream=None) -> Callbacks:
    """(on_step, on_epoch, close) for `fit`: verbose 0 silent, 2 a line per epoch, 1/'auto' a live bar."""
    stream = stream or sys.stderr
    if verbose in (0, False, "silent"):
        return None, None, lambda: None
    if verbose == 2 or not stream.isatty():
        return None, lambda e, logs: print(epoch_line(e, epochs, logs), file=stream, flush=True), lambda: None
    return _RichBar(epochs, stream).callbacks()


class _RichBar:
    """One bar per epoch showing step, loss, accuracy, images/s and ETA; finished epochs stay as lines."""

    def __init__(self, epochs: int, stream):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        self.epochs = epochs
        self.console = Console(file=stream)
        self.progress = Progress(TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), console=self.console,
                                 transient=True)
        self.task = None
        self.started, self.seen_at_start = 0.0, 0

    def callbacks(self) -> Callbacks:
        self.progress.start()
        return self.on_step, self.on_epoch, self.progress.stop

    def on_step(self, epoch: int, step: int, logs: dict[str, float]) -> None:
        if self.task is None:
            # The first report comes after `step_every` steps: measure speed from here on.
            self.started, self.seen_at_start = time.perf_counter(), logs["seen"]
            self.task = self.progress.add_task("train", total=logs["steps"], epoch=f"{epoch + 1}/{self.epochs}", stats="")
        elapsed, done = time.perf_counter() - self.started, logs["seen"] - self.seen_at_start
        speed = f"  {done / elapsed:,.0f} img/s" if done and elapsed > 0 else ""
        stats = f"loss {logs['loss']:.4f}  acc {logs['accuracy']:.4f}{speed}"
        self.progress.update(self.task, completed=step, stats=stats)

    def on_epoch(self, epoch: int, logs: dict[str, float]) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
        self.console.print(epoch_line(epoch, self.epochs, logs))
