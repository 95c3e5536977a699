"""UpSampling2D: repeat each pixel `size` times per side ("nearest") or interpolate ("bilinear"), as Keras's
`layers.UpSampling2D`; no weights. Bilinear is Keras's resize with half-pixel centres and no antialiasing,
torch's `interpolate(align_corners=False)`."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.spec.base import Layer, Shape
from cnnlab.spec.checks import SpecError, _pair
from cnnlab.spec.units_base import Compact, Converter, Options, Unit, _check_channels_last

INTERPOLATIONS = ("nearest", "bilinear")


@dataclass(frozen=True)
class UpSampling2D(Layer):
    size: tuple[int, int] = (2, 2)
    interpolation: str = "nearest"
    keras_name: ClassVar[str] = "up_sampling2d"

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _pair(self.size, "UpSampling2D size"))
        if self.interpolation not in INTERPOLATIONS:
            raise SpecError(f"UpSampling2D interpolation must be one of {', '.join(INTERPOLATIONS)}, "
                            f"got {self.interpolation!r}")

    def output_shape(self, shape: Shape) -> Shape:
        h, w, c = self._need_image(shape)
        return (h * self.size[0], w * self.size[1], c)


class Upsample(nn.Module):
    def __init__(self, spec: UpSampling2D, shape: Shape):
        super().__init__()
        self.size, self.mode = spec.size, spec.interpolation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "nearest":
            return x.repeat_interleave(self.size[0], 2).repeat_interleave(self.size[1], 3)
        return F.interpolate(x, scale_factor=self.size, mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"size={self.size}, mode={self.mode}"


def _read(opts: Options, shape: Shape) -> Layer:
    _check_channels_last(opts)
    return UpSampling2D(opts.pair("size", (2, 2)), opts.get("interpolation", "nearest"), name=opts.name)


def _write(spec: UpSampling2D) -> dict[str, Any]:
    return {"size": list(spec.size), "data_format": "channels_last", "interpolation": spec.interpolation}


def _parse(g: tuple[Any, ...]) -> Layer:
    return UpSampling2D((int(g[0]), int(g[1] if g[1] is not None else g[0])), g[2] or "nearest")


def _format(spec: UpSampling2D) -> str:
    size = f"{spec.size[0]}" if spec.size[0] == spec.size[1] else f"{spec.size[0]}x{spec.size[1]}"
    return f"up{size}" + ("bilinear" if spec.interpolation == "bilinear" else "")


UNIT = Unit(
    spec=UpSampling2D,
    build=Upsample,
    keras=Converter(_read, _write, build_config=True),
    compact=Compact(re.compile(r"up(\d+)(?:x(\d+))?(bilinear|nearest)?"), _parse, _format, "up2"),
)
