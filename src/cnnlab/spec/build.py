"""Build a plain `torch.nn.Sequential` from a `ModelSpec`, one child per Keras layer, named as Keras names it.

The module takes float input (B, C, H, W) scaled to [0, 1] and returns logits: a trailing softmax
in the spec is left to the loss (training) and to `predict` (inference), which is numerically safer
and lets the fast path fuse log-softmax into the cross-entropy.
"""
from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.spec import layers as L
from cnnlab.spec.backbone import backbone_layer
from cnnlab.spec.conv_arithmetic import same_padding

ACTIVATION_MODULES: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "softmax": lambda: nn.Softmax(dim=1),  # channel axis for (B, C) and (B, C, H, W) alike
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "silu": nn.SiLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),  # Keras's default slope
}


class SamePool2d(nn.Module):
    """Pooling with TF's asymmetric 'same' padding: max ignores the pad, average divides by real pixels."""

    def __init__(self, kind: str, pool: tuple[int, int], stride: tuple[int, int], pad: tuple[int, int, int, int]):
        super().__init__()
        self.kind, self.pool, self.stride, self.pad = kind, pool, stride, pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "max":
            return F.max_pool2d(F.pad(x, self.pad, value=float("-inf")), self.pool, self.stride)
        total = F.avg_pool2d(F.pad(x, self.pad), self.pool, self.stride)
        ones = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype, device=x.device)
        return total / F.avg_pool2d(F.pad(ones, self.pad), self.pool, self.stride)

    def extra_repr(self) -> str:
        return f"{self.kind}, pool={self.pool}, stride={self.stride}, pad={self.pad}"


class ChannelDense(nn.Linear):
    """Keras's Dense on an image: a linear map of the channel axis at every pixel (a 1x1 conv)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, units, H, W)
        # explicit permutations: ONNX export turns movedim's -1 into an invalid Transpose
        return F.linear(x.permute(0, 2, 3, 1), self.weight, self.bias).permute(0, 3, 1, 2)


def _block(parts: dict[str, nn.Module], activation: str | None) -> nn.Sequential:
    """A layer with weights as named parts (pad, conv/linear, act), so parameter names stay
    `conv2d.conv.weight` whatever the padding or activation."""
    if activation:
        parts["act"] = ACTIVATION_MODULES[activation]()
    return nn.Sequential(OrderedDict(parts))


def _conv(spec: L.Conv2D, shape: L.Shape) -> nn.Module:
    h, w, c = shape
    (kh, kw), (sh, sw) = spec.kernel_size, spec.strides
    parts: dict[str, nn.Module] = {}
    padding: tuple[int, int] = (0, 0)
    if spec.padding == "same":
        (top, bottom), (left, right) = same_padding(h, kh, sh), same_padding(w, kw, sw)
        if top == bottom and left == right:
            padding = (top, left)
        else:  # TF puts the odd row/column of padding after; torch's own padding is symmetric
            parts["pad"] = nn.ZeroPad2d((left, right, top, bottom))
    parts["conv"] = nn.Conv2d(c, spec.filters, spec.kernel_size, spec.strides, padding, bias=spec.use_bias)
    return _block(parts, spec.activation)


def _pool(spec: L._Pooling2D, shape: L.Shape) -> nn.Module:
    h, w, _ = shape
    kind = "max" if isinstance(spec, L.MaxPooling2D) else "avg"
    (ph, pw), (sh, sw) = spec.pool_size, spec.stride_pair
    if spec.padding == "same":
        (top, bottom), (left, right) = same_padding(h, ph, sh), same_padding(w, pw, sw)
        if top or bottom or left or right:
            return SamePool2d(kind, (ph, pw), (sh, sw), (left, right, top, bottom))
    return nn.MaxPool2d((ph, pw), (sh, sw)) if kind == "max" else nn.AvgPool2d((ph, pw), (sh, sw))


def _dense(spec: L.Dense, shape: L.Shape) -> nn.Module:
    linear = (ChannelDense if len(shape) == 3 else nn.Linear)(shape[-1], spec.units, bias=spec.use_bias)
    return _block({"linear": linear}, spec.activation)


def _batchnorm(spec: L.BatchNormalization, shape: L.Shape) -> nn.Module:
    norm = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
    # Keras's momentum weights the old statistic; torch's weights the new one.
    return norm(shape[-1], eps=spec.epsilon, momentum=1 - spec.momentum)


BUILDERS: dict[type, Callable[..., nn.Module]] = {
    L.Conv2D: _conv,
    L.MaxPooling2D: _pool,
    L.AveragePooling2D: _pool,
    L.GlobalAveragePooling2D: lambda spec, shape: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
    L.Flatten: lambda spec, shape: nn.Flatten(),
    L.Dense: _dense,
    L.Dropout: lambda spec, shape: nn.Dropout(spec.rate),
    L.BatchNormalization: _batchnorm,
    L.Activation: lambda spec, shape: (ACTIVATION_MODULES[spec.activation]() if spec.activation != "linear"
                                       else nn.Identity()),
    L.EfficientNetLite0: lambda spec, shape: backbone_layer(spec, shape, ACTIVATION_MODULES),
}


def ends_in_softmax(spec: L.ModelSpec) -> bool:
    last = spec.layers[-1] if spec.layers else None
    return getattr(last, "activation", None) == "softmax"


def build(spec: L.ModelSpec, *, logits: bool = True) -> nn.Sequential:
    """The torch module of `spec`; with `logits` a final softmax is left out (see module docstring)."""
    in_shapes = [spec.input_shape, *spec.shapes()[:-1]]
    children: OrderedDict[str, nn.Module] = OrderedDict()
    for i, (layer, name, shape) in enumerate(zip(spec.layers, spec.names, in_shapes)):
        if logits and i == len(spec.layers) - 1 and ends_in_softmax(spec):
            layer = _without_softmax(layer)
        children[name] = BUILDERS[type(layer)](layer, shape)
    return nn.Sequential(children)


def _without_softmax(layer: L.Layer) -> L.Layer:
    if isinstance(layer, L.Activation):
        return L.Activation("linear", name=layer.name)
    return dataclasses.replace(layer, activation=None)


def keras_init_(module: nn.Module, seed: int | None = None) -> None:
    """Keras's default initialisation, Glorot-uniform kernels and zero biases, so that cnnlab's
    training curves start where the lecture's Keras ones do."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    own = [m for m in module.modules() if hasattr(m, "init_weights_")]  # pretrained backbones load their own
    skip = {id(sub) for m in own for sub in m.modules()}
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and id(m) not in skip:
            with torch.no_grad():
                receptive = m.weight[0, 0].numel() if m.weight.dim() > 2 else 1  # kh * kw
                fan_in, fan_out = m.weight[0].numel(), m.weight.shape[0] * receptive
                bound = (6.0 / (fan_in + fan_out)) ** 0.5
                m.weight.uniform_(-bound, bound, generator=gen)
                if m.bias is not None:
                    m.bias.zero_()
    for m in own:
        m.init_weights_()


def place(module: nn.Module, device: torch.device) -> nn.Module:
    """Move a module to `device` in channels_last memory: the layout every cnnlab input batch has,
    so training, evaluation and a reloaded model all run the same kernels (identical predictions)."""
    return module.to(device=device, memory_format=torch.channels_last)


def new_module(spec: L.ModelSpec, seed: int | None = None) -> nn.Sequential:
    """A fresh, Keras-initialised module for `spec`: what every front end trains (the same seed, the same weights)."""
    if seed is not None:
        torch.manual_seed(seed)
    module = build(spec)
    keras_init_(module, seed)
    return module
