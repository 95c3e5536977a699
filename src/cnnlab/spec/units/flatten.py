"""Flatten: (H, W, C) to (H * W * C,). Keras flattens in HWC order, the torch module in CHW order; the Keras
conversion of the next layers' weights permutes their rows (`cnnlab.runs.keras_layers.feature_perm`)."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from cnnlab.spec.base import Layer, Shape
from cnnlab.spec.units_base import Compact, Converter, Options, Unit, _check_channels_last


@dataclass(frozen=True)
class Flatten(Layer):
    keras_name: ClassVar[str] = "flatten"

    def output_shape(self, shape: Shape) -> Shape:
        return (math.prod(shape),)


def _read(opts: Options, shape: Shape) -> Layer:
    _check_channels_last(opts)
    return Flatten(name=opts.name)


UNIT = Unit(
    spec=Flatten,
    build=lambda spec, shape: nn.Flatten(),
    keras=Converter(_read, lambda spec: {"data_format": "channels_last"}, build_config=True),
    compact=Compact(re.compile(r"flatten"), lambda g: Flatten(), lambda spec: "flatten", "flatten"),
)
