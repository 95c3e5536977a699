"""The compact one-line model format, e.g. `conv32k3:relu max2 conv64k3:relu max2 flatten dense10:softmax`.

Tokens are separated by spaces or commas; each is one layer (or the input shape). The JSON form is
the source of truth: `parse(format(spec)) == spec` for every spec.

    in28x28x1                    input shape (H x W x C); optional, the data can supply it
    conv32k3  conv32k3x5         Conv2D: filters, kernel (square or HxW)
        ...s2  ...s2x1           strides            ...same    padding 'same'    ...nobias
    max2  max3s2same  avg2       MaxPooling2D / AveragePooling2D: pool size, strides, padding
    gap                          GlobalAveragePooling2D
    flatten                      Flatten
    dense64  dense10nobias       Dense: units
    drop0.5                      Dropout: rate
    bn  bn0.9                    BatchNormalization (optionally its momentum)
    act:tanh                     Activation
    tconv16k3s2same              Conv2DTranspose (as conv)
    up2  up2bilinear             UpSampling2D: size, interpolation
    :relu                        suffix: the activation of a conv or dense layer (none: linear)
"""
from __future__ import annotations

import re
from typing import Any, Callable

from cnnlab.spec import layers as L
from cnnlab.spec.units import UNITS
from cnnlab.spec.units_base import decimal

_PAIR = r"(\d+)(?:x(\d+))?"
_ACT = r"(?::([a-z_]+))?"
PATTERNS: dict[str, re.Pattern[str]] = {
    "in": re.compile(r"in(\d+)x(\d+)x(\d+)"),
    "conv": re.compile(rf"conv(\d+)k{_PAIR}(?:s{_PAIR})?(same|valid)?(nobias)?{_ACT}"),
    "pool": re.compile(rf"(max|avg){_PAIR}(?:s{_PAIR})?(same|valid)?"),
    "dense": re.compile(rf"dense(\d+)(nobias)?{_ACT}"),
    "bn": re.compile(r"bn(0?\.\d+)?"),
    "act": re.compile(r"act:([a-z_]+)"),
    **{unit.spec.__name__: unit.compact.pattern for unit in UNITS if unit.compact},
}
_UNIT_PARSERS = {unit.spec.__name__: unit.compact.parse for unit in UNITS if unit.compact}


def _pair(a: str, b: str | None) -> tuple[int, int]:
    return (int(a), int(b if b is not None else a))


def _layer(kind: str, g: tuple[Any, ...]) -> L.Layer | tuple[int, ...]:
    if kind == "in":
        return tuple(int(v) for v in g)
    if kind in _UNIT_PARSERS:
        return _UNIT_PARSERS[kind](g)
    if kind == "conv":
        return L.Conv2D(int(g[0]), _pair(g[1], g[2]), _pair(g[3], g[4]) if g[3] else (1, 1),
                        g[5] or "valid", g[7], use_bias=not g[6])
    if kind == "pool":
        cls = L.MaxPooling2D if g[0] == "max" else L.AveragePooling2D
        return cls(_pair(g[1], g[2]), _pair(g[3], g[4]) if g[3] else None, g[5] or "valid")
    if kind == "dense":
        return L.Dense(int(g[0]), g[2], use_bias=not g[1])
    if kind == "bn":
        return L.BatchNormalization(float(g[0])) if g[0] else L.BatchNormalization()
    if kind == "act":
        return L.Activation(g[0])
    raise AssertionError(f"no parser for token kind {kind!r}")


def parse(text: str) -> L.ModelSpec:
    """Parse the compact form; an unknown token raises SpecError naming it and its position."""
    tokens = [t for t in re.split(r"[\s,]+", text.strip()) if t]
    if not tokens:
        raise L.SpecError("empty model spec")
    input_shape, layers = None, []
    for i, token in enumerate(tokens):
        for kind, pattern in PATTERNS.items():
            m = pattern.fullmatch(token)
            if m:
                try:
                    item = _layer(kind, m.groups())
                except L.SpecError:
                    raise
                except ValueError as exc:  # e.g. a number too long for int()
                    raise L.SpecError(f"cannot read token {i + 1} {token[:40]!r} of the model spec: {exc}") from None
                break
        else:
            raise L.SpecError(f"cannot read token {i + 1} {token!r} of the model spec; expected e.g. conv32k3:relu, "
                              "max2, flatten, dense64:relu, drop0.5, bn, gap, act:relu, "
                              + ", ".join(u.compact.example for u in UNITS if u.compact and u.compact.example
                                          not in ("flatten", "drop0.5", "gap")) + " or in28x28x1")
        if isinstance(item, tuple):
            if i != 0:
                raise L.SpecError(f"the input shape {token!r} must be the first token")
            input_shape = item
        else:
            layers.append(item)
    return L.ModelSpec(tuple(layers), input_shape)


def _fmt_pair(p: tuple[int, int]) -> str:
    return f"{p[0]}" if p[0] == p[1] else f"{p[0]}x{p[1]}"


def _act(a: str | None) -> str:
    return f":{a}" if a else ""


FORMATTERS: dict[type, Callable[[Any], str]] = {
    L.Conv2D: lambda l: (f"conv{l.filters}k{_fmt_pair(l.kernel_size)}"
                         + (f"s{_fmt_pair(l.strides)}" if l.strides != (1, 1) else "")
                         + ("same" if l.padding == "same" else "") + ("" if l.use_bias else "nobias") + _act(l.activation)),
    L.MaxPooling2D: lambda l: _fmt_pool("max", l),
    L.AveragePooling2D: lambda l: _fmt_pool("avg", l),
    L.Dense: lambda l: f"dense{l.units}" + ("" if l.use_bias else "nobias") + _act(l.activation),
    L.BatchNormalization: lambda l: "bn" if l.momentum == 0.99 else f"bn{decimal(l.momentum)}",
    L.Activation: lambda l: f"act:{l.activation}",
    **{unit.spec: unit.compact.format for unit in UNITS if unit.compact},
}


def _fmt_pool(kind: str, l: L._Pooling2D) -> str:
    strides = f"s{_fmt_pair(l.strides)}" if l.strides is not None else ""
    return f"{kind}{_fmt_pair(l.pool_size)}{strides}" + ("same" if l.padding == "same" else "")


def format(spec: L.ModelSpec) -> str:  # noqa: A001 - mirrors parse()
    """The compact form of `spec`. Layer names, BatchNormalization epsilon and the layers without a token
    (preprocessing, pretrained backbones) have no compact form: SpecError."""
    for layer in spec.layers:
        if type(layer) not in FORMATTERS:
            raise L.SpecError(f"{layer.type} has no compact form; use JSON")
        if layer.name is not None or (isinstance(layer, L.BatchNormalization) and layer.epsilon != 1e-3):
            raise L.SpecError(f"{layer.type} {layer.name or ''} has options the compact form cannot hold; use JSON")
    head = ["in" + "x".join(map(str, spec.input_shape))] if spec.input_shape else []
    return " ".join(head + [FORMATTERS[type(layer)](layer) for layer in spec.layers])
