"""Training progress wherever the output goes: a rich bar on a terminal, a live line in Jupyter, steady lines in logs.

`progress_callbacks(verbose, epochs)` picks: 0 silent; 2 one line per epoch; 1 or "auto" a live bar on a
terminal, an updating display in a notebook, and in a pipe or log file a plain line every 10% of an epoch
or every 10 s, whichever comes first (a bar in a log file is unreadable control codes).
"""
from __future__ import annotations

import html
import math
import sys
import time
from typing import Any, Callable

from cnnlab.progress import LINE_FRACTION, LINE_SECONDS
from cnnlab.train.fit import EpochCallback, StepCallback

Callbacks = tuple[StepCallback | None, EpochCallback | None, Callable[[], None]]

REPORTS_PER_EPOCH = 20  # so that every 10% of an epoch has a step report to print


def epoch_line(epoch: int, epochs: int, logs: dict[str, float]) -> str:
    parts = [f"epoch {epoch + 1}/{epochs}", f"loss {logs['loss']:.4f}", f"accuracy {logs['accuracy']:.4f}"]
    if "val_loss" in logs:
        parts += [f"val_loss {logs['val_loss']:.4f}", f"val_accuracy {logs['val_accuracy']:.4f}"]
    parts.append(f"{logs.get('seconds', 0):.1f}s")
    return "  ".join(parts)


def step_line(epoch: int, epochs: int, step: int, logs: dict[str, Any], images_per_second: float | None) -> str:
    """`epoch 1/2  step 94/469  2,310 img/s  loss 0.4123  accuracy 0.8711` (loss and accuracy: the epoch so far)."""
    width = len(str(logs["steps"]))
    speed = f"  {images_per_second:,.0f} img/s" if images_per_second else ""
    return (f"epoch {epoch + 1}/{epochs}  step {step:>{width}}/{logs['steps']}{speed}  "
            f"loss {logs['loss']:.4f}  accuracy {logs['accuracy']:.4f}")


def step_every(n_images: int, batch_size: int) -> int:
    """How often `fit` should call on_step (in steps) so that progress can report every 10% of an epoch.

    20 for MNIST at batch 128 (469 steps: fit's default); fewer for small data, down to every step. Each
    report waits for the device, so not more often than needed."""
    steps = max(1, math.ceil(n_images / max(1, batch_size)))
    return max(1, min(20, steps // REPORTS_PER_EPOCH))


def in_notebook() -> bool:
    """True inside Jupyter (an IPython kernel), whose output is neither a terminal nor a log."""
    ipython = sys.modules.get("IPython")  # not imported: not in a notebook (and IPython is no dependency)
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def progress_callbacks(verbose: int | str, epochs: int, stream: Any = None,
                       clock: Callable[[], float] = time.perf_counter) -> Callbacks:
    """(on_step, on_epoch, close) for `fit`: verbose 0 silent, 2 a line per epoch, 1/'auto' live progress."""
    stream = stream or sys.stderr
    if verbose in (0, False, "silent"):
        return None, None, lambda: None
    if verbose not in (1, 2, True, "auto"):
        raise ValueError(f"verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
    if verbose == 2:
        return None, lambda e, logs: print(epoch_line(e, epochs, logs), file=stream, flush=True), lambda: None
    if in_notebook():
        return _NotebookLine(epochs, clock).callbacks()
    if not _isatty(stream):
        return _SteadyLines(epochs, stream, clock).callbacks()
    return _RichBar(epochs, stream).callbacks()


def _isatty(stream: Any) -> bool:
    return bool(getattr(stream, "isatty", None) and stream.isatty())


class _Speed:
    """Images per second since the first report of the epoch (the first comes after some steps already ran)."""

    def __init__(self, clock: Callable[[], float]):
        self.clock, self.started, self.seen_at_start = clock, None, 0

    def reset(self) -> None:
        self.started = None

    def update(self, seen: int) -> float | None:
        now = self.clock()
        if self.started is None:
            self.started, self.seen_at_start = now, seen
            return None
        elapsed = now - self.started
        return (seen - self.seen_at_start) / elapsed if elapsed > 0 and seen > self.seen_at_start else None


class _SteadyLines:
    """A plain line every 10% of an epoch or every 10 s, and the epoch's line at its end: for pipes and logs."""

    def __init__(self, epochs: int, stream: Any, clock: Callable[[], float]):
        self.epochs, self.stream, self.clock = epochs, stream, clock
        self.speed = _Speed(clock)
        self.next_step, self.last_line = 0, clock()

    def callbacks(self) -> Callbacks:
        return self.on_step, self.on_epoch, lambda: None

    def on_step(self, epoch: int, step: int, logs: dict[str, Any]) -> None:
        ips = self.speed.update(logs["seen"])
        steps = logs["steps"]
        if step >= steps:
            return  # the epoch's own line follows at once
        now = self.clock()
        if step >= self.next_step or now - self.last_line >= LINE_SECONDS:
            print(step_line(epoch, self.epochs, step, logs, ips), file=self.stream, flush=True)
            self.last_line = now
            self.next_step = (math.floor(step / (steps * LINE_FRACTION)) + 1) * steps * LINE_FRACTION

    def on_epoch(self, epoch: int, logs: dict[str, float]) -> None:
        print(epoch_line(epoch, self.epochs, logs), file=self.stream, flush=True)
        self.speed.reset()
        self.next_step, self.last_line = 0, self.clock()


class _NotebookLine:
    """In Jupyter: one output line per epoch, updated in place (IPython's display handles; no ipywidgets)."""

    UPDATE_SECONDS = 0.25  # each update is a message to the browser

    def __init__(self, epochs: int, clock: Callable[[], float]):
        from IPython.display import display
        self.display = display
        self.epochs, self.clock = epochs, clock
        self.speed = _Speed(clock)
        self.handle, self.last = None, -math.inf

    def callbacks(self) -> Callbacks:
        return self.on_step, self.on_epoch, lambda: None

    def _show(self, text: str) -> None:
        body = {"text/plain": text, "text/html": f"<pre style='margin:0'>{html.escape(text)}</pre>"}
        if self.handle is None:  # both forms: notebooks show the HTML, consoles and saved outputs the text
            self.handle = self.display(body, raw=True, display_id=True)
        else:
            self.handle.update(body, raw=True)

    def on_step(self, epoch: int, step: int, logs: dict[str, Any]) -> None:
        ips = self.speed.update(logs["seen"])
        now = self.clock()
        if now - self.last >= self.UPDATE_SECONDS:
            steps = logs["steps"]
            bar = "#" * round(20 * step / steps)
            self._show(f"[{bar:<20}] " + step_line(epoch, self.epochs, step, logs, ips))
            self.last = now

    def on_epoch(self, epoch: int, logs: dict[str, float]) -> None:
        self._show(epoch_line(epoch, self.epochs, logs))
        self.handle, self.last = None, -math.inf  # the next epoch gets its own line
        self.speed.reset()


class _RichBar:
    """One bar per epoch showing step, loss, accuracy, images/s and ETA; finished epochs stay as lines."""

    def __init__(self, epochs: int, stream: Any):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        self.epochs = epochs
        self.console = Console(file=stream)
        self.progress = Progress(TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), console=self.console,
                                 transient=True)
        self.task = None
        self.speed = _Speed(time.perf_counter)

    def callbacks(self) -> Callbacks:
        self.progress.start()
        return self.on_step, self.on_epoch, self.progress.stop

    def on_step(self, epoch: int, step: int, logs: dict[str, Any]) -> None:
        if self.task is None:
            self.task = self.progress.add_task("train", total=logs["steps"], epoch=f"{epoch + 1}/{self.epochs}", stats="")
        ips = self.speed.update(logs["seen"])
        speed = f"  {ips:,.0f} img/s" if ips else ""
        stats = f"loss {logs['loss']:.4f}  acc {logs['accuracy']:.4f}{speed}"
        self.progress.update(self.task, completed=step, stats=stats)

    def on_epoch(self, epoch: int, logs: dict[str, float]) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
        self.speed.reset()
        self.console.print(epoch_line(epoch, self.epochs, logs))


def smoothed_loss_floor(label_smoothing: float, classes: int) -> float:
    """The cross-entropy of a perfect prediction against smoothed targets (the training loss's floor).

    Targets are 1 - eps + eps/K on the true class and eps/K on the others (PyTorch's and Keras's
    smoothing); the best prediction is the target itself, and its loss is the target's entropy."""
    eps, k = label_smoothing, classes
    if eps <= 0 or k < 2:
        return 0.0
    true, other = 1 - eps + eps / k, eps / k
    return -(true * math.log(true) + (k - 1) * other * math.log(other))
