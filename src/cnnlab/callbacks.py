"""Keras's callbacks (`keras.callbacks`): hooks that `model.fit(..., callbacks=[...])` calls, and the common ones.

`cnnlab.train.fit.fit` knows nothing of these: `CallbackList.fit_hooks` turns them into fit's plain
`on_step` / `on_epoch` / `should_stop` / `lr_for_epoch` callables. Logs carry Keras's names (the metric
name given to compile, "val_" + it, "learning_rate" where an lr callback sets it). EarlyStopping follows
Keras's rule (stop after `patience` epochs without improvement, restore the best weights at the end),
which counts one epoch less than `cnnlab train --early-stopping` does.
"""
from __future__ import annotations

import copy
import csv
import math
import os
from pathlib import Path
from typing import Any, Callable

from cnnlab.train.early_stopping import Improvement, monitor_mode


class Callback:
    """Base class: override the hooks you need; `self.model` and `self.params` are set by fit."""

    def __init__(self) -> None:
        self.model: Any = None
        self.params: dict[str, Any] = {}

    def set_model(self, model: Any) -> None:
        self.model = model

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None: ...
    def on_train_end(self, logs: dict[str, float] | None = None) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None: ...
    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None: ...
    def on_train_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None: ...


class _Monitor:
    """A monitored log under the one keep-best rule (`cnnlab.train.early_stopping.Improvement`)."""

    def __init__(self, monitor: str, mode: str, min_delta: float, what: str):
        self.monitor = monitor
        self.rule = Improvement(monitor_mode(monitor, mode, what), min_delta)

    def value(self, logs: dict[str, float] | None) -> float | None:
        if not logs or self.monitor not in logs:
            return None
        return float(logs[self.monitor])

    @property
    def best(self) -> float:
        """The best value so far in the log's units; Keras's starting infinity before the first."""
        best = self.rule.best_value
        return best if best is not None else (math.inf if self.rule.mode == "min" else -math.inf)

    def reset(self) -> None:
        self.rule.best, self.rule.waited = None, 0


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved for `patience` epochs, as keras.callbacks.EarlyStopping."""

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0, verbose: int = 0,
                 mode: str = "auto", baseline: float | None = None, restore_best_weights: bool = False,
                 start_from_epoch: int = 0):
        super().__init__()
        self.monitor, self.patience, self.verbose = monitor, patience, verbose
        self.restore_best_weights, self.start_from_epoch = restore_best_weights, start_from_epoch
        self._rule = _Monitor(monitor, mode, min_delta, "EarlyStopping")
        self.baseline = baseline
        self.stopped_epoch, self.best_epoch = 0, 0
        self.best_weights: dict[str, Any] | None = None

    @property
    def best(self) -> float:
        return self._rule.best

    @property
    def wait(self) -> int:
        return self._rule.rule.waited

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        self.stopped_epoch, self.best_epoch, self.best_weights = 0, 0, None
        self._rule.reset()

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        value = self._rule.value(logs)
        if value is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights, self.best_epoch = _weights(self.model), epoch
        rule = self._rule.rule
        waited = rule.waited
        if rule.update(value):
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = _weights(self.model)
            if self.baseline is not None and not Improvement(rule.mode, rule.min_delta,
                                                             rule.lower_is_better(self.baseline)).improves(value):
                rule.waited = waited + 1  # a new best that misses the baseline does not reset the wait (Keras)
            return
        # Keras counts the epoch that stops: `patience` epochs without improvement end it (fit's --early-stopping
        # tolerates `patience` and stops on the next)
        if rule.waited >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            self.model.module.load_state_dict(self.best_weights)


class ModelCheckpoint(Callback):
    """Save the model (or its weights) after epochs, as keras.callbacks.ModelCheckpoint.

    `filepath` may hold `{epoch:02d}` and any log, e.g. `{val_loss:.2f}`; a `.keras` path is written by
    `model.save`, a `.safetensors` one too (cnnlab's file); `save_weights_only` writes only the weights.
    """

    def __init__(self, filepath: str | os.PathLike, monitor: str = "val_loss", verbose: int = 0,
                 save_best_only: bool = False, save_weights_only: bool = False, mode: str = "auto",
                 save_freq: str = "epoch", initial_value_threshold: float | None = None):
        super().__init__()
        if save_freq != "epoch":
            raise ValueError(f"ModelCheckpoint save_freq must be 'epoch' in cnnlab, got {save_freq!r}")
        suffix = Path(filepath).suffix
        allowed = (".safetensors",) if save_weights_only else (".keras", ".safetensors")
        if not any(str(filepath).endswith(s) for s in allowed):
            raise ValueError(f"ModelCheckpoint filepath must end in {' or '.join(allowed)}, got {str(filepath)!r}"
                             f" (suffix {suffix!r})")
        self.filepath, self.monitor, self.verbose = str(filepath), monitor, verbose
        self.save_best_only, self.save_weights_only = save_best_only, save_weights_only
        self._rule = _Monitor(monitor, mode, 0.0, "ModelCheckpoint")
        if initial_value_threshold is not None:
            self._rule.rule.best = self._rule.rule.lower_is_better(initial_value_threshold)

    @property
    def best(self) -> float:
        return self._rule.best

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs or {}
        path = self.filepath.format(epoch=epoch + 1, **logs)
        if self.save_best_only:
            value = self._rule.value(logs)
            if value is None:
                raise ValueError(f"ModelCheckpoint monitors {self.monitor!r}, which the logs do not have "
                                 f"(they have {', '.join(logs)}); give validation_data or monitor 'loss'")
            if not self._rule.rule.update(value):
                return
            if self.verbose > 0:
                print(f"Epoch {epoch + 1}: {self.monitor} improved to {float(logs[self.monitor]):.5f}, saving {path}")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by `factor` after `patience` epochs without improvement (Keras's rule)."""

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, verbose: int = 0,
                 mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0):
        super().__init__()
        if not 0 < factor < 1:
            raise ValueError(f"ReduceLROnPlateau factor must be in (0, 1), got {factor!r}")
        self.monitor, self.factor, self.patience, self.verbose = monitor, factor, patience, verbose
        self.cooldown, self.min_lr = cooldown, min_lr
        self._rule = _Monitor(monitor, mode, min_delta, "ReduceLROnPlateau")
        self.wait, self.cooldown_counter = 0, 0

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        self.wait, self.cooldown_counter = 0, 0
        self._rule.reset()

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs if logs is not None else {}
        logs["learning_rate"] = self.model.learning_rate
        value = self._rule.value(logs)
        if value is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._rule.rule.update(value):
            self.wait = 0
        elif self.cooldown_counter == 0:  # Keras's plateau count pauses while cooling down
            self.wait += 1
            if self.wait >= self.patience:
                old = self.model.learning_rate
                new = max(old * self.factor, self.min_lr)
                if old > new:
                    self.model.learning_rate = new
                    if self.verbose > 0:
                        print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new}.")
                    self.cooldown_counter, self.wait = self.cooldown, 0


class LearningRateScheduler(Callback):
    """Set the learning rate before each epoch to `schedule(epoch, lr)` (Keras's)."""

    def __init__(self, schedule: Callable[[int, float], float], verbose: int = 0):
        super().__init__()
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        lr = float(self.schedule(epoch, self.model.learning_rate))
        if not (math.isfinite(lr) and lr >= 0):
            raise ValueError(f"LearningRateScheduler's schedule must return a finite rate >= 0, got {lr!r}")
        self.model.learning_rate = lr

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        if logs is not None:
            logs["learning_rate"] = self.model.learning_rate


class CSVLogger(Callback):
    """Write each epoch's logs as a row of a CSV file (epoch first), as keras.callbacks.CSVLogger."""

    def __init__(self, filename: str | os.PathLike, separator: str = ",", append: bool = False):
        super().__init__()
        self.filename, self.separator, self.append = str(filename), separator, append
        self._file: Any = None
        self._writer: Any = None

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        exists = self.append and os.path.exists(self.filename) and os.path.getsize(self.filename) > 0
        self._file = open(self.filename, "a" if self.append else "w", newline="")  # noqa: SIM115 - closed at train end
        self._has_header = exists
        self._writer = None

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs or {}
        if self._writer is None:
            self._writer = csv.DictWriter(self._file, ["epoch", *sorted(logs)], delimiter=self.separator)
            if not self._has_header:
                self._writer.writeheader()
        self._writer.writerow({"epoch": epoch, **logs})
        self._file.flush()

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _weights(model: Any) -> dict[str, Any]:
    return copy.deepcopy(model.module.state_dict())


class CallbackList:
    """Callbacks as the plain hooks of `cnnlab.train.fit.fit`; `keras_logs` renames fit's logs to Keras's."""

    def __init__(self, callbacks: list[Callback] | None, model: Any, params: dict[str, Any],
                 keras_logs: Callable[[dict[str, float]], dict[str, float]]):
        self.callbacks = list(callbacks or [])
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise ValueError(f"callbacks must be cnnlab.callbacks.Callback objects, got {cb!r}")
            cb.set_model(model)
            cb.set_params(params)
        self.model, self.keras_logs = model, keras_logs
        self.epoch_logs: list[dict[str, float]] = []
        self._given: float | None = None  # the rate fit last used; a different model.learning_rate is a request

    @property
    def wants_batches(self) -> bool:
        """True when a callback has its own on_train_batch_end: fit then reports every step (slower)."""
        return any(type(cb).on_train_batch_end is not Callback.on_train_batch_end for cb in self.callbacks)

    def call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

    def on_step(self, epoch: int, step: int, logs: dict[str, float]) -> None:
        self.call("on_train_batch_end", step - 1, self.keras_logs(logs))

    def lr_for_epoch(self, epoch: int, lr: float) -> float:
        if self.model.learning_rate is None or self.model.learning_rate == self._given:
            self.model.learning_rate = lr
        self.call("on_epoch_begin", epoch, {})
        self._given = self.model.learning_rate
        return self.model.learning_rate

    def on_epoch(self, epoch: int, logs: dict[str, float]) -> None:
        self.model.learning_rate = self._given = logs["lr"]
        keras = self.keras_logs(logs)
        self.call("on_epoch_end", epoch, keras)
        self.epoch_logs.append(keras)

    def should_stop(self) -> bool:
        return bool(self.model.stop_training)


__all__ = ["CSVLogger", "Callback", "EarlyStopping", "LearningRateScheduler", "ModelCheckpoint", "ReduceLROnPlateau"]
