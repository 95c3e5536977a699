"""Conv2DTranspose: the learnt upsampling of segmentation decoders (Keras's `layers.Conv2DTranspose`).

Output size per side: n * stride + max(kernel - stride, 0) with padding="valid", n * stride with "same"; for
"same" the full transposed convolution, (n - 1) * stride + kernel, is cropped by max(kernel - stride, 0), the
smaller half before (TensorFlow's rule, which Keras follows on every backend); a kernel smaller than the
stride leaves rows that only the bias reaches, at the end. Keras's kernel is (kh, kw, filters, in); torch's ConvTranspose2d weight (in, filters, kh, kw).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.spec.base import Layer, Shape
from cnnlab.spec.checks import check_conv_fields
from cnnlab.spec.units_base import (
    _GLOROT,
    ACTIVATION_MODULES,
    Arrays,
    Compact,
    Converter,
    Options,
    Perm,
    Tensors,
    Unit,
    _check_channels_last,
    _init,
    _no_regularisers,
    read_activation,
)


@dataclass(frozen=True)
class Conv2DTranspose(Layer):
    filters: int
    kernel_size: tuple[int, int] = (3, 3)
    strides: tuple[int, int] = (1, 1)
    padding: str = "valid"
    activation: str | None = None
    use_bias: bool = True
    keras_name: ClassVar[str] = "conv2d_transpose"

    def __post_init__(self) -> None:
        check_conv_fields(self, "Conv2DTranspose")

    def output_shape(self, shape: Shape) -> Shape:
        h, w, _ = self._need_image(shape)
        return (*(self._side(n, k, s) for n, k, s in zip((h, w), self.kernel_size, self.strides)), self.filters)

    def _side(self, n: int, k: int, s: int) -> int:
        return n * s if self.padding == "same" else n * s + max(k - s, 0)

    def params(self, shape: Shape) -> tuple[int, int]:
        kh, kw = self.kernel_size
        return kh * kw * shape[-1] * self.filters + self.use_bias * self.filters, 0


class TransposedConv(nn.Module):
    """ConvTranspose2d, then the crop (and pad) of 'same' padding; an activation module `act` after it."""

    def __init__(self, spec: Conv2DTranspose, shape: Shape):
        super().__init__()
        self.conv = nn.ConvTranspose2d(shape[2], spec.filters, spec.kernel_size, spec.strides, bias=spec.use_bias)
        self.size = spec.output_shape(shape)[:2]
        # (before, after) crop per side; TF puts the odd row/column of cropping after
        self.crops = [((k - s) // 2 if k > s else 0) if spec.padding == "same" else 0
                      for k, s in zip(spec.kernel_size, spec.strides)]
        self.act = ACTIVATION_MODULES[spec.activation]() if spec.activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv_transpose2d(x, self.conv.weight, None, self.conv.stride)
        (top, left), (h, w) = self.crops, self.size
        y = y[:, :, top:top + h, left:left + w]
        if y.shape[2] < h or y.shape[3] < w:  # a kernel smaller than the stride: rows no input reaches, at the end
            y = F.pad(y, (0, w - y.shape[3], 0, h - y.shape[2]))
        if self.conv.bias is not None:  # after the padding: those rows hold the bias too, as Keras's do
            y = y + self.conv.bias[:, None, None]
        return self.act(y)

    def init_weights_(self) -> None:
        """Keras's Glorot-uniform kernel (fans from its (kh, kw, filters, in) shape) and zero bias."""
        weight = self.conv.weight  # (in, filters, kh, kw)
        receptive = weight.shape[2] * weight.shape[3]
        bound = (6.0 / ((weight.shape[0] + weight.shape[1]) * receptive)) ** 0.5
        with torch.no_grad():
            weight.uniform_(-bound, bound)
            if self.conv.bias is not None:
                self.conv.bias.zero_()


def _read(opts: Options, shape: Shape) -> Layer:
    _check_channels_last(opts)
    opts.expect("dilation_rate", (1, 1), 1)
    opts.expect_null("output_padding")
    opts.ignore("kernel_initializer", "bias_initializer")
    _no_regularisers(opts, "kernel", "bias")
    opts.expect_null("activity_regularizer")
    return Conv2DTranspose(opts.get("filters"), opts.pair("kernel_size", (3, 3)), opts.pair("strides", (1, 1)),
                           opts.get("padding", "valid"), read_activation(opts), opts.get("use_bias", True),
                           name=opts.name)


def _write(spec: Conv2DTranspose) -> dict[str, Any]:
    return {"filters": spec.filters, "kernel_size": list(spec.kernel_size), "strides": list(spec.strides),
            "padding": spec.padding, "output_padding": None, "data_format": "channels_last", "dilation_rate": [1, 1],
            "activation": spec.activation or "linear", "use_bias": spec.use_bias, "kernel_initializer": _GLOROT,
            "bias_initializer": _init("Zeros"), "kernel_regularizer": None, "bias_regularizer": None,
            "activity_regularizer": None, "kernel_constraint": None, "bias_constraint": None}


def _to_keras(ts: Tensors, perm: Perm, layer: Any = None) -> Arrays:
    kernel = ts[0].detach().to("cpu", torch.float32).numpy().transpose(2, 3, 1, 0)  # (in, out, kh, kw) -> HWOI
    return [kernel, *(t.detach().to("cpu", torch.float32).numpy() for t in ts[1:])]


def _to_torch(arrays: Arrays, perm: Perm, layer: Any = None) -> Tensors:
    return [torch.from_numpy(np.ascontiguousarray(arrays[0].transpose(3, 2, 0, 1))),
            *(torch.from_numpy(a.copy()) for a in arrays[1:])]


def _parse(g: tuple[Any, ...]) -> Layer:
    pair = lambda a, b: (int(a), int(b if b is not None else a))  # noqa: E731
    return Conv2DTranspose(int(g[0]), pair(g[1], g[2]), pair(g[3], g[4]) if g[3] else (1, 1), g[5] or "valid", g[7],
                           use_bias=not g[6])


def _format(spec: Conv2DTranspose) -> str:
    pair = lambda p: f"{p[0]}" if p[0] == p[1] else f"{p[0]}x{p[1]}"  # noqa: E731
    return (f"tconv{spec.filters}k{pair(spec.kernel_size)}" + (f"s{pair(spec.strides)}" if spec.strides != (1, 1) else "")
            + ("same" if spec.padding == "same" else "") + ("" if spec.use_bias else "nobias")
            + (f":{spec.activation}" if spec.activation else ""))


UNIT = Unit(
    spec=Conv2DTranspose,
    build=TransposedConv,
    keras=Converter(_read, _write, _to_keras, _to_torch, build_config=True, variables=("kernel", "bias")),
    compact=Compact(re.compile(r"tconv(\d+)k(\d+)(?:x(\d+))?(?:s(\d+)(?:x(\d+))?)?(same|valid)?(nobias)?(?::([a-z_]+))?"),
                    _parse, _format, "tconv32k3s2same:relu"),
)
