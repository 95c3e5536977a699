"""The one keep-best / early-stopping rule: when a monitored value improves, and how long since it last did.

`Improvement` is the rule (mode, min_delta, the best so far, values waited since); `fit`'s early stopping
(`KeepBest`, here), the Keras callbacks (`cnnlab.callbacks`: EarlyStopping, ModelCheckpoint,
ReduceLROnPlateau, with Keras's own patience count) and the fine-tune's keep-best (`cnnlab.train.fine_tune`)
all decide with it.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

MODES = ("min", "max")


def monitor_mode(monitor: str, mode: str = "auto", what: str = "early stopping") -> str:
    """"min" or "max" for a monitored log; "auto": max for accuracies (and AUC), min otherwise, as Keras says."""
    if mode not in ("auto", *MODES):
        raise ValueError(f"{what} mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        return "max" if ("acc" in monitor or "auc" in monitor) else "min"
    return mode


@dataclass
class Improvement:
    """A value improves on the best so far when it is better by more than `min_delta` in `mode`'s direction
    (Keras's test); `waited` counts the values since the last improvement."""
    mode: str = "min"
    min_delta: float = 0.0
    best: float | None = None  # lower is better: a "max" value is kept negated (as checkpoints record it)
    waited: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be 'min' or 'max', got {self.mode!r}")
        self.min_delta = abs(self.min_delta)

    def lower_is_better(self, value: float) -> float:
        return -float(value) if self.mode == "max" else float(value)

    @property
    def best_value(self) -> float | None:
        """The best value in the monitor's own units (None before the first)."""
        return None if self.best is None else (-self.best if self.mode == "max" else self.best)

    def improves(self, value: float) -> bool:
        return self.best is None or self.lower_is_better(value) < self.best - self.min_delta

    def update(self, value: float) -> bool:
        """Record `value`: True (and waited back to 0) when it improves, else one more value waited."""
        if self.improves(value):
            self.best, self.waited = self.lower_is_better(value), 0
            return True
        self.waited += 1
        return False


@dataclass
class KeepBest:
    """`fit`'s early stopping: stop after `patience` epochs without a new best `monitor` (cnnlab train's
    --early-stopping counts the epochs it tolerates: it stops on the next), keeping the best epoch's weights."""
    monitor: str
    patience: int | None  # None: never stop, nothing is tracked
    restore_best_weights: bool = True
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        self.rule = Improvement(monitor_mode(self.monitor), self.min_delta)
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch: int | None = None

    @property
    def best(self) -> float | None:
        return self.rule.best

    @property
    def waited(self) -> int:
        return self.rule.waited

    def update(self, epoch: int, logs: dict[str, float], module: torch.nn.Module) -> bool:
        """After epoch `epoch` (1-based) with its `logs`: True when training should stop."""
        if self.patience is None:
            return False
        if self.monitor not in logs:
            raise ValueError(f"early stopping monitors {self.monitor!r} but there is no validation data; "
                             "give validation_split or validation_data, or monitor 'loss'")
        if self.rule.update(logs[self.monitor]):
            self.best_epoch = epoch
            self.best_state = copy.deepcopy(module.state_dict()) if self.restore_best_weights else None
            return False
        return self.rule.waited > self.patience

    def restore(self, state: Any) -> None:
        """Continue from a checkpoint's loop state (its best, best_state and waited)."""
        self.rule.best, self.best_state, self.rule.waited = state.best, state.best_state, state.waited

    def finish(self, module: torch.nn.Module) -> None:
        """Put the best epoch's weights back, when asked to keep them."""
        if self.best_state is not None:
            module.load_state_dict(self.best_state)
