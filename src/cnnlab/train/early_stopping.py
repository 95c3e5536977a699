"""Early stopping on a monitored log: the best value so far, the weights then, and epochs waited since."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class EarlyStopping:
    """Stop after `patience` epochs without a new best `monitor`; optionally keep the best epoch's weights.

    Values are stored as "lower is better" (accuracies negated), which is what a checkpoint records.
    """
    monitor: str
    patience: int | None  # None: never stop, nothing is tracked
    restore_best_weights: bool = True
    best: float | None = None
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch: int | None = None
    waited: int = 0

    def update(self, epoch: int, logs: dict[str, float], module: torch.nn.Module) -> bool:
        """After epoch `epoch` (1-based) with its `logs`: True when training should stop."""
        if self.patience is None:
            return False
        if self.monitor not in logs:
            raise ValueError(f"early stopping monitors {self.monitor!r} but there is no validation data; "
                             "give validation_split or validation_data, or monitor 'loss'")
        value = logs[self.monitor] * (-1 if "accuracy" in self.monitor else 1)
        if self.best is None or value < self.best:
            self.best, self.waited, self.best_epoch = value, 0, epoch
            self.best_state = copy.deepcopy(module.state_dict()) if self.restore_best_weights else None
            return False
        self.waited += 1
        return self.waited > self.patience

    def restore(self, state: Any) -> None:
        """Continue from a checkpoint's loop state (its best, best_state and waited)."""
        self.best, self.best_state, self.waited = state.best, state.best_state, state.waited

    def finish(self, module: torch.nn.Module) -> None:
        """Put the best epoch's weights back, when asked to keep them."""
        if self.best_state is not None:
            module.load_state_dict(self.best_state)
