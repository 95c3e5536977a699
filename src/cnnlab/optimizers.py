"""Keras-shaped optimiser objects for `model.compile(optimizer=Adam(learning_rate=1e-3))`.

They only record choices; `cnnlab.train.optim.make_optimizer` builds the torch optimiser from them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Optimizer:
    learning_rate: float | None = None  # None: the recipe's: Keras's constant default, or one-cycle (recipe="fast")

    name = ""

    def train_options(self) -> dict[str, Any]:
        """The TrainConfig fields this optimiser sets."""
        return {"optimizer": self.name, "lr": self.learning_rate}


@dataclass(frozen=True)
class Adam(Optimizer):
    name = "adam"


@dataclass(frozen=True)
class AdamW(Optimizer):
    weight_decay: float = 0.01
    name = "adamw"

    def train_options(self) -> dict[str, Any]:
        return {**super().train_options(), "weight_decay": self.weight_decay}


@dataclass(frozen=True)
class SGD(Optimizer):
    momentum: float | None = None  # None: the recipe's, Keras's 0.0 (compile's default) or cnnlab's 0.9 (recipe="fast")
    name = "sgd"

    def train_options(self) -> dict[str, Any]:
        return {**super().train_options(), **({"momentum": self.momentum} if self.momentum is not None else {})}


@dataclass(frozen=True)
class RMSprop(Optimizer):
    name = "rmsprop"


BY_NAME: dict[str, type[Optimizer]] = {"adam": Adam, "adamw": AdamW, "sgd": SGD, "rmsprop": RMSprop}


def get(optimizer: str | Optimizer) -> Optimizer:
    if isinstance(optimizer, Optimizer):
        return optimizer
    key = optimizer.lower() if isinstance(optimizer, str) else optimizer
    if key not in BY_NAME:
        raise ValueError(f"optimizer must be one of {', '.join(BY_NAME)} or a cnnlab.optimizers object, got {optimizer!r}")
    return BY_NAME[key]()
