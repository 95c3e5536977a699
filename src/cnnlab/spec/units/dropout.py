"""Dropout: zeroes a random `rate` of the values while training (the rest scaled by 1 / (1 - rate)); no weights."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from cnnlab.spec.base import Layer, Shape
from cnnlab.spec.checks import SpecError, _is_number
from cnnlab.spec.units_base import Compact, Converter, Options, Unit, decimal


@dataclass(frozen=True)
class Dropout(Layer):
    rate: float
    keras_name: ClassVar[str] = "dropout"

    def __post_init__(self) -> None:
        if not _is_number(self.rate) or not 0 <= self.rate < 1:
            raise SpecError(f"Dropout rate must be a number in [0, 1), got {self.rate!r}")
        object.__setattr__(self, "rate", float(self.rate))


def _read(opts: Options, shape: Shape) -> Layer:
    opts.ignore("seed")
    opts.expect_null("noise_shape")
    return Dropout(opts.get("rate"), name=opts.name)


UNIT = Unit(
    spec=Dropout,
    build=lambda spec, shape: nn.Dropout(spec.rate),
    keras=Converter(_read, lambda spec: {"rate": spec.rate, "seed": None, "noise_shape": None}),
    compact=Compact(re.compile(r"drop(0?\.\d+|0)"), lambda g: Dropout(float(g[0])),
                    lambda spec: f"drop{decimal(spec.rate)}", "drop0.5"),
)


