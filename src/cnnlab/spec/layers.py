"""Layer specs: frozen dataclasses with Keras argument names, their output shapes and parameter counts.

A spec knows nothing of torch; `cnnlab.spec.build.build` turns a list of them into an `nn.Sequential`.
Shapes are channels-last and exclude the batch axis: `(26, 26, 32)` prints as `(None, 26, 26, 32)`.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from cnnlab.spec.base import Layer, Shape
from cnnlab.spec.checks import (  # noqa: F401 - SpecError, ACTIVATIONS, PADDINGS are part of this module's interface
    ACTIVATIONS,
    PADDINGS,
    SpecError,
    _activation,
    _check_bool,
    _check_fill,
    _factor_range,
    _is_number,
    _padding,
    _pair,
    _positive_int,
    check_conv_fields,
)
from cnnlab.spec.conv_arithmetic import conv_output_size
from cnnlab.spec.image_layers import (  # noqa: F401 - part of this module's interface
    BACKBONE_TYPES,
    IMAGE_LAYER_TYPES,
    PREPROCESSING_TYPES,
    EfficientNetLite0,
    EfficientNetLite1,
    EfficientNetLite2,
    EfficientNetLiteBase,
    RandomFlip,
    RandomRotation,
    RandomZoom,
    Rescaling,
)
from cnnlab.spec.units import BY_TYPE, UNITS


@dataclass(frozen=True)
class Conv2D(Layer):
    filters: int
    kernel_size: tuple[int, int] = (3, 3)
    strides: tuple[int, int] = (1, 1)
    padding: str = "valid"
    activation: str | None = None
    use_bias: bool = True
    keras_name: ClassVar[str] = "conv2d"

    def __post_init__(self) -> None:
        check_conv_fields(self, "Conv2D")

    def output_shape(self, shape: Shape) -> Shape:
        h, w, _ = self._need_image(shape)
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        if self.padding == "valid" and (kh > h or kw > w):
            raise self._fail(shape, f"kernel {kh}x{kw} is larger than the {h}x{w} input with padding='valid'")
        return (conv_output_size(h, kh, self.padding, sh), conv_output_size(w, kw, self.padding, sw), self.filters)

    def params(self, shape: Shape) -> tuple[int, int]:
        kh, kw = self.kernel_size
        return (kh * kw * shape[-1] + self.use_bias) * self.filters, 0


@dataclass(frozen=True)
class SeparableConv2D(Conv2D):
    """A depthwise convolution (`depth_multiplier` filters per input channel), then a 1x1 pointwise one."""
    depth_multiplier: int = 1
    keras_name: ClassVar[str] = "separable_conv2d"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "depth_multiplier", _positive_int(self.depth_multiplier,
                                                                   "SeparableConv2D depth_multiplier"))

    def params(self, shape: Shape) -> tuple[int, int]:
        (kh, kw), mid = self.kernel_size, shape[-1] * self.depth_multiplier
        return kh * kw * mid + mid * self.filters + self.use_bias * self.filters, 0


@dataclass(frozen=True)
class _Pooling2D(Layer):
    pool_size: tuple[int, int] = (2, 2)
    strides: tuple[int, int] | None = None  # None: the pool size, as in Keras
    padding: str = "valid"

    def __post_init__(self) -> None:
        object.__setattr__(self, "pool_size", _pair(self.pool_size, f"{self.type} pool_size"))
        if self.strides is not None:
            object.__setattr__(self, "strides", _pair(self.strides, f"{self.type} strides"))
        object.__setattr__(self, "padding", _padding(self.padding, self.type))

    @property
    def stride_pair(self) -> tuple[int, int]:
        return self.strides or self.pool_size

    def output_shape(self, shape: Shape) -> Shape:
        h, w, c = self._need_image(shape)
        (ph, pw), (sh, sw) = self.pool_size, self.stride_pair
        if self.padding == "valid" and (ph > h or pw > w):
            raise self._fail(shape, f"pool {ph}x{pw} is larger than the {h}x{w} input with padding='valid'")
        return (conv_output_size(h, ph, self.padding, sh), conv_output_size(w, pw, self.padding, sw), c)


@dataclass(frozen=True)
class MaxPooling2D(_Pooling2D):
    keras_name: ClassVar[str] = "max_pooling2d"


@dataclass(frozen=True)
class AveragePooling2D(_Pooling2D):
    keras_name: ClassVar[str] = "average_pooling2d"


@dataclass(frozen=True)
class Dense(Layer):
    """Fully connected. On an image input it acts on the channel axis, as Keras's Dense does."""
    units: int
    activation: str | None = None
    use_bias: bool = True
    keras_name: ClassVar[str] = "dense"

    def __post_init__(self) -> None:
        object.__setattr__(self, "units", _positive_int(self.units, "Dense units"))
        object.__setattr__(self, "activation", _activation(self.activation, "Dense"))
        _check_bool(self.use_bias, "Dense use_bias")

    def output_shape(self, shape: Shape) -> Shape:
        return (*shape[:-1], self.units)

    def params(self, shape: Shape) -> tuple[int, int]:
        return (shape[-1] + self.use_bias) * self.units, 0


@dataclass(frozen=True)
class BatchNormalization(Layer):
    """Normalises the last (channel) axis. Keras counts gamma/beta trainable, moving mean/var not."""
    momentum: float = 0.99
    epsilon: float = 1e-3
    keras_name: ClassVar[str] = "batch_normalization"

    def __post_init__(self) -> None:
        if not _is_number(self.momentum) or not 0 <= self.momentum < 1:
            raise SpecError(f"BatchNormalization momentum must be in [0, 1), got {self.momentum!r}")
        if not _is_number(self.epsilon) or not self.epsilon > 0:
            raise SpecError(f"BatchNormalization epsilon must be positive, got {self.epsilon!r}")

    def params(self, shape: Shape) -> tuple[int, int]:
        return 2 * shape[-1], 2 * shape[-1]


@dataclass(frozen=True)
class Activation(Layer):
    activation: str = "relu"
    keras_name: ClassVar[str] = "activation"

    def __post_init__(self) -> None:
        object.__setattr__(self, "activation", _activation(self.activation, "Activation") or "linear")


# the specs of the layer units (cnnlab.spec.units), by their usual names here
GlobalAveragePooling2D = BY_TYPE["GlobalAveragePooling2D"].spec
Flatten = BY_TYPE["Flatten"].spec
Dropout = BY_TYPE["Dropout"].spec
Conv2DTranspose = BY_TYPE["Conv2DTranspose"].spec
UpSampling2D = BY_TYPE["UpSampling2D"].spec

LAYER_TYPES: dict[str, type[Layer]] = {
    cls.__name__: cls
    for cls in (Conv2D, SeparableConv2D, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D, Flatten, Dense,
                Dropout, BatchNormalization, Activation, *IMAGE_LAYER_TYPES, *(unit.spec for unit in UNITS))
}


def from_dict(d: dict[str, Any], types: dict[str, type[Layer]] = LAYER_TYPES) -> Layer:
    """Build a layer spec from its JSON form `{"type": "Conv2D", "filters": 32, ...}`."""
    if not isinstance(d, dict) or "type" not in d:
        raise SpecError(f"a layer must be an object with a 'type' key, got {d!r}")
    kind = d["type"]
    if not isinstance(kind, str) or kind not in types:
        raise SpecError(f"unknown layer type {kind!r}, expected one of {', '.join(types)}")
    cls = types[kind]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known - {"type"})
    if unknown:
        raise SpecError(f"{kind} got unknown argument(s) {', '.join(unknown)}; it takes {', '.join(sorted(known))}")
    if not isinstance(d.get("trainable", True), bool):
        raise SpecError(f"{kind} trainable must be true or false, got {d['trainable']!r}")
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k != "type"}
    try:
        return cls(**args)
    except TypeError as exc:  # a required argument is missing
        raise SpecError(f"{kind}: {exc}") from None


@dataclass(frozen=True)
class Input:
    """Keras's `Input(shape=...)`: declares the input shape as the first item of a Sequential."""
    shape: tuple[int, ...]
    name: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", check_input_shape(self.shape))


MAX_SIDE = 8192  # input images: longest side, and pixels in all (64 MP), so no spec asks for absurd tensors
MAX_PIXELS = 8192 * 8192


def check_input_shape(shape: Any) -> tuple[int, ...]:
    if (not isinstance(shape, (tuple, list)) or not shape
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)):
        raise SpecError(f"input_shape must be a tuple of positive ints like (28, 28, 1), got {shape!r}")
    side, pixels = max(shape[:2]), math.prod(shape[:2])
    if side > MAX_SIDE or pixels > MAX_PIXELS:
        raise SpecError(f"input_shape {tuple(shape)!r} is too large: at most {MAX_SIDE} pixels a side and "
                        f"{MAX_PIXELS:,} pixels in all")
    return tuple(shape)


def keras_names(layers: list[Layer] | tuple[Layer, ...]) -> list[str]:
    """Names as a fresh Keras session gives them: conv2d, conv2d_1, ... unless a layer names itself."""
    counts: dict[str, int] = {}
    names = []
    for layer in layers:
        base = layer.keras_name
        n = counts.get(base, 0)
        counts[base] = n + 1
        name = getattr(layer, "name", None)
        if name is not None and not isinstance(name, str):
            raise SpecError(f"layer name must be a string, got {name!r}")
        names.append(name or (base if n == 0 else f"{base}_{n}"))
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise SpecError(f"layer name {dup!r} is used twice; layer names must be unique")
    for name in names:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise SpecError(f"layer name {name!r} must be letters, digits and underscores")
    return names


def drop_auto_names(layers: list[Layer] | tuple[Layer, ...]) -> list[Layer]:
    """The layers with each name the model would give anyway left unset, so equal models compare equal."""
    auto = keras_names([dataclasses.replace(layer, name=None) for layer in layers])
    return [dataclasses.replace(layer, name=None) if layer.name == a else layer for layer, a in zip(layers, auto)]


@dataclass(frozen=True)
class ModelSpec:
    """A whole model: input shape (H, W, C) and the layers in order."""
    layers: tuple[Layer, ...]
    input_shape: tuple[int, ...] | None = None
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        if self.input_shape is None and self.layers and getattr(self.layers[0], "input_shape", None):
            object.__setattr__(self, "input_shape", self.layers[0].input_shape)
        # The model holds the input shape; layers drop theirs so equal models compare equal.
        object.__setattr__(self, "layers", tuple(
            dataclasses.replace(layer, input_shape=None) if getattr(layer, "input_shape", None) else layer
            for layer in self.layers))
        if self.input_shape is not None:
            object.__setattr__(self, "input_shape", check_input_shape(self.input_shape))
        for layer in self.layers:
            if not isinstance(layer, Layer):
                raise SpecError(f"expected a layer spec such as Conv2D(...), got {layer!r}")
        object.__setattr__(self, "names", tuple(keras_names(self.layers)))

    def with_input_shape(self, shape: tuple[int, ...]) -> "ModelSpec":
        return ModelSpec(self.layers, tuple(shape))

    def shapes(self) -> list[Shape]:
        """Output shape of every layer; raises SpecError naming the first layer that cannot fit."""
        if not self.layers:
            raise SpecError("the model has no layers: add at least one, e.g. Flatten() and Dense(10, activation='softmax')")
        if self.input_shape is None:
            raise SpecError("the model has no input shape: give input_shape=(H, W, C) to the first layer or an Input")
        shape, out = self.input_shape, []
        for layer, name in zip(self.layers, self.names):
            shape = dataclasses.replace(layer, name=name).output_shape(shape)
            out.append(shape)
        return out

    def to_dict(self) -> dict[str, Any]:
        layers = [layer.to_dict() for layer in self.layers]
        for layer in layers:
            layer.pop("input_shape", None)  # the model's own input_shape says it once
        return {"input_shape": list(self.input_shape) if self.input_shape else None, "layers": layers}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelSpec":
        if not isinstance(d, dict) or not isinstance(d.get("layers"), list):
            raise SpecError('a model must be an object {"input_shape": [...], "layers": [...]}')
        unknown = sorted(set(d) - {"input_shape", "layers", "name"})
        if unknown:
            raise SpecError(f"unknown model key(s) {', '.join(unknown)}; expected input_shape and layers")
        shape = d.get("input_shape")
        shape = tuple(shape) if isinstance(shape, list) else shape  # anything else: check_input_shape says why
        return cls(tuple(from_dict(layer) for layer in d["layers"]), shape if shape != () else None)


# --- preprocessing layers (shape-preserving, no parameters; random ones act only in training) -------------
