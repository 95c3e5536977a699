"""TrainConfig: every choice about how to train, validated where it is made, with the default recipe."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from cnnlab.train import optim
from cnnlab.train.augment import PRESETS, AugmentOptions
from cnnlab.train.optim import OPTIMIZERS, SCHEDULES

LOSSES = ("categorical", "binary")  # softmax over K classes, or one sigmoid unit with 0/1 labels
MONITORS = ("val_loss", "val_accuracy", "loss", "accuracy")
PRECISIONS = ("auto", "fp32", "bf16")
MAX_EPOCHS = 100_000  # numbers from a user are bounded so a typo cannot mean a run that never ends
MAX_BATCH = 1 << 20
MAX_SEED = 2**63 - 1  # torch.manual_seed takes a signed 64-bit integer


# Recipes as tables: each recipe's hyperparameters in one place, with the reason beside each.
# "fast" is cnnlab's own: TrainConfig's defaults, what `cnnlab train`, the web page (cnnlab.train.plan) and
# compile(recipe="fast") start from; a zoo model's recipe (spec.zoo) and the data's (train.data_recipe) go on top.
RECIPES: dict[str, dict[str, tuple[Any, str]]] = {
    "fast": {
        "epochs": (1, "the seed CNN reaches 99% on MNIST in one pass with the schedule below"),
        "batch_size": (128, "the seed CNN's measured sweet spot on CPU: big enough to be fast, small enough to learn in one epoch"),
        "optimizer": ("adam", "forgiving of its rate; the lecture's choice"),
        "momentum": (0.9, "SGD only: the usual heavy-ball value"),
        "schedule": (None, "one-cycle (a short warm-up, then a long anneal), or constant when a rate is given"),
        "label_smoothing": (0.1, "softer targets: better-calibrated probabilities and a little regularisation"),
    },
    "keras": {
        "schedule": ("constant", "Keras's optimisers keep the rate they are given"),
        "label_smoothing": (0.0, "Keras's sparse categorical cross-entropy does not smooth"),
        "momentum": (0.0, "keras.optimizers.SGD has no momentum unless asked"),
    },
}


def recipe_fields(name: str) -> dict[str, Any]:
    """The TrainConfig fields recipe `name` sets (its table without the reasons)."""
    if name not in RECIPES:
        raise ValueError(f"recipe must be 'keras' (Keras's constant rates) or 'fast' (cnnlab's one-cycle), got {name!r}")
    return {field: value for field, (value, _) in RECIPES[name].items()}


_FAST = recipe_fields("fast")


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Defaults are the "fast" recipe (`RECIPES`) `cnnlab train` uses; see README "Training defaults".

    schedule None means: one-cycle when `lr` is not given, constant when it is, so an explicit
    learning rate is used exactly as given. One-cycle peaks (a short warm-up, then a long anneal, so
    the peak can sit far above a constant rate): Adam/AdamW 8e-3, measured on the seed CNN; SGD and
    RMSprop 3x their usual 0.01 and 1e-3, not tuned. Constant rates: Adam 1e-3, SGD 0.01, RMSprop 1e-3.
    """
    epochs: int = _FAST["epochs"]
    batch_size: int = _FAST["batch_size"]
    optimizer: str = _FAST["optimizer"]
    lr: float | None = None
    momentum: float = _FAST["momentum"]  # SGD only
    weight_decay: float = 0.0
    schedule: str | None = _FAST["schedule"]
    label_smoothing: float = _FAST["label_smoothing"]
    validation_split: float = 0.0
    shuffle: bool = True
    seed: int | None = 0
    device: str = "auto"
    early_stopping_patience: int | None = None  # epochs without improvement before stopping
    monitor: str = "val_loss"
    restore_best_weights: bool = True
    eval_batch_size: int = 2000
    class_weight: tuple[float, ...] | None = None  # loss weight per class (cnnlab train sets it for imbalanced data)
    augment: AugmentOptions | None = None  # random changes to each training batch (cnnlab.train.augment)
    deterministic: bool = False  # bit-identical reruns; see cnnlab.train.reproducible.deterministic_mode
    precision: str = "auto"  # "auto": bf16 autocast where the hardware does bf16 natively, else fp32
    loss: str = "categorical"  # "binary": the module returns one logit (B, 1), labels are 0/1

    def __post_init__(self) -> None:
        _check(isinstance(self.epochs, int) and 1 <= self.epochs <= MAX_EPOCHS, "epochs", self.epochs,
               f"an integer in [1, {MAX_EPOCHS}]")
        _check(isinstance(self.batch_size, int) and 1 <= self.batch_size <= MAX_BATCH, "batch_size", self.batch_size,
               f"an integer in [1, {MAX_BATCH}]")
        _check(self.seed is None or (isinstance(self.seed, int) and 0 <= self.seed <= MAX_SEED), "seed", self.seed,
               "None or an integer in [0, 2**63-1]")
        _check(self.optimizer in OPTIMIZERS, "optimizer", self.optimizer, " or ".join(OPTIMIZERS))
        _check(self.lr is None or (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0),
               "lr", self.lr, "a finite positive number")
        _check(isinstance(self.momentum, (int, float)) and math.isfinite(self.momentum) and self.momentum >= 0,
               "momentum", self.momentum, "a finite number >= 0")
        _check(isinstance(self.weight_decay, (int, float)) and math.isfinite(self.weight_decay)
               and self.weight_decay >= 0, "weight_decay", self.weight_decay, "a finite number >= 0")
        _check(isinstance(self.eval_batch_size, int) and 1 <= self.eval_batch_size <= MAX_BATCH,
               "eval_batch_size", self.eval_batch_size, f"an integer in [1, {MAX_BATCH}]")
        _check(self.schedule is None or self.schedule in SCHEDULES, "schedule", self.schedule, " or ".join(SCHEDULES))
        _check(0 <= self.label_smoothing < 1, "label_smoothing", self.label_smoothing, "a number in [0, 1)")
        _check(0 <= self.validation_split < 1, "validation_split", self.validation_split, "a number in [0, 1)")
        _check(self.precision in PRECISIONS, "precision", self.precision, " or ".join(PRECISIONS))
        _check(self.loss in LOSSES, "loss", self.loss, " or ".join(LOSSES))
        _check(self.monitor in MONITORS, "monitor", self.monitor, " or ".join(MONITORS))
        _check(self.early_stopping_patience is None or self.early_stopping_patience >= 0,
               "early_stopping_patience", self.early_stopping_patience, "an integer >= 0")
        _check_class_weight_and_augment(self)

    @property
    def resolved_schedule(self) -> str:
        return optim.resolved_schedule(self)

    def peak_lr(self) -> float:
        return optim.peak_lr(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def recipe_config(recipe: Mapping[str, Any], seed: int | None = 0, **given: Any) -> TrainConfig:
    """A zoo recipe with the user's choices on top; `given` values of None mean "not given".

    The one rule that makes it more than a dict merge: an explicit learning rate is used as given (a
    constant schedule), even over a recipe's one-cycle schedule, unless a schedule is given too.
    """
    chosen = {name: value for name, value in given.items() if value is not None}
    base = dict(recipe)
    if "lr" in chosen and "schedule" not in chosen:
        base.pop("schedule", None)
    return TrainConfig(**{**base, **chosen, "seed": seed})


def _check_class_weight_and_augment(config: TrainConfig) -> None:
    """Accept Keras's {class: weight} dict and a plain dict of augmentation options (as config.json holds)."""
    weights = config.class_weight
    if isinstance(weights, dict):
        _check(sorted(weights) == list(range(len(weights))), "class_weight", weights, "a weight for every class 0..K-1")
        weights = [weights[k] for k in range(len(weights))]
    if weights is not None:
        weights = tuple(float(w) for w in weights)
        _check(len(weights) > 0 and all(math.isfinite(w) and w >= 0 for w in weights) and any(weights),
               "class_weight", config.class_weight, "finite weights >= 0, not all zero")
        object.__setattr__(config, "class_weight", weights)
    if isinstance(config.augment, str):  # a preset by name, as a zoo recipe gives it
        _check(config.augment in PRESETS, "augment", config.augment, "a preset: " + ", ".join(PRESETS))
        object.__setattr__(config, "augment", PRESETS[config.augment])
    if isinstance(config.augment, dict):
        object.__setattr__(config, "augment", AugmentOptions(**config.augment))
    _check(config.augment is None or isinstance(config.augment, AugmentOptions), "augment", config.augment,
           "None or cnnlab.train.augment.AugmentOptions")


def _check(ok: bool, name: str, value: Any, expected: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {expected}, got {value!r}")
