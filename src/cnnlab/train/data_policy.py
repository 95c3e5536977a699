"""Training choices that follow from the data: loss weights for imbalanced classes, augmentation presets.

`cnnlab train` and the web page describe what they want (`DataPolicy`); this says what that means for a
given dataset, as TrainConfig fields plus one sentence per choice for the user.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnnlab.datasets.dataset import Dataset
from cnnlab.datasets.folders.check import IMBALANCE_THRESHOLD, auto_class_weight, class_weights, imbalance_ratio
from cnnlab.printable import printable
from cnnlab.train.augment import PRESETS, AugmentOptions

CLASS_WEIGHT_MODES = ("auto", "balanced", "none")
AUGMENT_CHOICES = ("auto", *PRESETS)


@dataclass(frozen=True)
class DataPolicy:
    """class_weight: "auto" weighs the loss when the largest class has over IMBALANCE_THRESHOLD times the
    images of the smallest, "balanced" always, "none" never. augment: None (off unless `augment_options`
    are given), "auto" (digits for grayscale data, photos for colour) or a preset; `augment_options`
    (AugmentOptions field -> value) override the preset's."""
    class_weight: str = "auto"
    augment: str | None = None
    augment_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.class_weight not in CLASS_WEIGHT_MODES:
            raise ValueError(f"class_weight must be one of {', '.join(CLASS_WEIGHT_MODES)}, got {self.class_weight!r}")
        if self.augment is not None and self.augment not in AUGMENT_CHOICES:
            raise ValueError(f"augment must be one of {', '.join(AUGMENT_CHOICES)}, got {self.augment!r}")


def data_choices(data: Dataset, policy: DataPolicy) -> tuple[dict[str, Any], list[str]]:
    """The TrainConfig fields `policy` chooses for `data` (class_weight, augment), and a line saying each."""
    options: dict[str, Any] = {}
    said = []
    k = len(data.class_names)
    counts = np.bincount(data.y_train, minlength=k).tolist()
    weights = {"auto": lambda: auto_class_weight(data.y_train, k), "balanced": lambda: class_weights(counts),
               "none": lambda: None}[policy.class_weight]()
    if weights is not None:
        options["class_weight"] = weights
        why = (f"the largest class has {imbalance_ratio(counts):.1f}x the images of the smallest (over "
               f"{IMBALANCE_THRESHOLD}); --class-weight none turns this off") if policy.class_weight == "auto" else "as asked"
        said.append("class weights: " + ", ".join(f"{printable(n)} {w:g}" for n, w in zip(data.class_names, weights))
                    + f" ({why})")
    augment = augment_options(policy, data.input_shape[-1])
    if augment is not None:
        options["augment"] = augment
        said.append(f"augmentation: {augment.describe()}")
    return options, said


def augment_options(policy: DataPolicy, channels: int) -> AugmentOptions | None:
    if policy.augment is None and not policy.augment_options:
        return None
    preset = policy.augment or "none"
    if preset == "auto":
        preset = "digits" if channels == 1 else "photos"
    base = PRESETS.get(preset, AugmentOptions())
    return AugmentOptions(**{**base.to_dict(), **policy.augment_options})
