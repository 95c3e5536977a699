"""Optimisers and learning-rate schedules by name: the one list that CLI choices, web schemas and `fit` share."""
from __future__ import annotations

from typing import Any, Callable, Protocol

import torch


class OptimChoices(Protocol):
    """What the optimiser and its schedule are made from (a `TrainConfig` has these fields)."""
    optimizer: str
    lr: float | None
    schedule: str | None
    momentum: float
    weight_decay: float


Builder = Callable[[Any, float, OptimChoices, dict[str, Any]], torch.optim.Optimizer]

# eps 1e-7 is Keras's, so the lecture's Adam and ours take the same steps; RMSprop's rho 0.9 likewise.
OPTIMIZER_BUILDERS: dict[str, Builder] = {
    "adam": lambda params, lr, c, fused: torch.optim.Adam(params, lr=lr, eps=1e-7, weight_decay=c.weight_decay, **fused),
    "adamw": lambda params, lr, c, fused: torch.optim.AdamW(params, lr=lr, eps=1e-7, weight_decay=c.weight_decay or 0.01,
                                                            **fused),
    "sgd": lambda params, lr, c, fused: torch.optim.SGD(params, lr=lr, momentum=c.momentum, weight_decay=c.weight_decay),
    "rmsprop": lambda params, lr, c, fused: torch.optim.RMSprop(params, lr=lr, alpha=0.9, eps=1e-7,
                                                                weight_decay=c.weight_decay),
}
OPTIMIZERS = tuple(OPTIMIZER_BUILDERS)
SCHEDULES = ("onecycle", "constant", "cosine")
CONSTANT_LR = {"adam": 1e-3, "adamw": 1e-3, "sgd": 0.01, "rmsprop": 1e-3}  # Keras's defaults
# One-cycle peaks: a short warm-up then a long anneal lets the peak sit far above a constant rate.
# Adam/AdamW 8e-3 was measured on the seed CNN; SGD and RMSprop are 3x their usual rates, not tuned.
ONECYCLE_PEAK = {"adam": 8e-3, "adamw": 8e-3, "sgd": 0.03, "rmsprop": 3e-3}


def resolved_schedule(config: OptimChoices) -> str:
    """The schedule given, else one-cycle, or constant when a learning rate is given (used exactly as given)."""
    return config.schedule or ("constant" if config.lr is not None else "onecycle")


def peak_lr(config: OptimChoices) -> float:
    """The rate given, else the one-cycle peak or the constant rate of the optimiser."""
    if config.lr is not None:
        return config.lr
    return (ONECYCLE_PEAK if resolved_schedule(config) == "onecycle" else CONSTANT_LR)[config.optimizer]


def make_optimizer(params: Any, config: OptimChoices, device: torch.device = torch.device("cpu")) -> torch.optim.Optimizer:
    # On CUDA the fused kernels update every tensor in one launch: small nets are launch-bound there.
    fused = {"fused": True} if device.type == "cuda" and config.optimizer in ("adam", "adamw") else {}
    return OPTIMIZER_BUILDERS[config.optimizer](params, peak_lr(config), config, fused)


def make_schedule(opt: torch.optim.Optimizer, config: OptimChoices, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    schedule = resolved_schedule(config)
    if schedule == "onecycle" and total_steps >= 3:  # fewer: no room for a cycle, constant
        # Short warm-up then a long cosine anneal: large early steps, a fine finish in few epochs. The warm-up
        # lasts at least one step (OneCycleLR divides by its length).
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=peak_lr(config), total_steps=total_steps, pct_start=0.2 if total_steps > 5 else 2 / total_steps,
            div_factor=10, final_div_factor=100, cycle_momentum=config.optimizer == "sgd")
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
