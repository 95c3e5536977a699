"""GlobalAveragePooling2D: the mean of each channel over the image, (H, W, C) to (C,); no weights."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from cnnlab.spec.base import Layer, Shape
from cnnlab.spec.units_base import Compact, Converter, Options, Unit, _check_channels_last


@dataclass(frozen=True)
class GlobalAveragePooling2D(Layer):
    keras_name: ClassVar[str] = "global_average_pooling2d"

    def output_shape(self, shape: Shape) -> Shape:
        return (self._need_image(shape)[2],)


def _read(opts: Options, shape: Shape) -> Layer:
    _check_channels_last(opts)
    opts.expect("keepdims", False)
    return GlobalAveragePooling2D(name=opts.name)


UNIT = Unit(
    spec=GlobalAveragePooling2D,
    build=lambda spec, shape: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
    keras=Converter(_read, lambda spec: {"data_format": "channels_last", "keepdims": False}),
    compact=Compact(re.compile(r"gap"), lambda g: GlobalAveragePooling2D(), lambda spec: "gap", "gap"),
)
