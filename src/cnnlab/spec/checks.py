"""Argument checks shared by the layer specs: Keras's accepted forms, one-line errors naming the bad value."""
from __future__ import annotations

from typing import Any

ACTIVATIONS = ("relu", "sigmoid", "tanh", "softmax", "gelu", "linear", "elu", "selu", "silu", "leaky_relu")
PADDINGS = ("valid", "same")


class SpecError(ValueError):
    """A layer or model spec is invalid, or a layer cannot take its input's shape."""


def _pair(value: Any, what: str) -> tuple[int, int]:
    """Keras accepts 3 or (3, 3) for kernel sizes, strides and pool sizes."""
    if isinstance(value, bool):
        raise SpecError(f"{what} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        value = (value, value)
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise SpecError(f"{what} must be an int or a pair of ints, got {value!r}")
    if min(value) < 1:
        raise SpecError(f"{what} must be positive, got {tuple(value)!r}")
    return (int(value[0]), int(value[1]))


def _activation(value: Any, what: str) -> str | None:
    if value is None or value == "linear":
        return None
    if value not in ACTIVATIONS:
        raise SpecError(f"{what} activation must be one of {', '.join(ACTIVATIONS)}, got {value!r}")
    return value


def _padding(value: Any, what: str) -> str:
    if value not in PADDINGS:
        raise SpecError(f"{what} padding must be 'valid' or 'same', got {value!r}")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_bool(value: Any, what: str) -> None:
    if not isinstance(value, bool):
        raise SpecError(f"{what} must be true or false, got {value!r}")


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"{what} must be a positive integer, got {value!r}")
    return value


def _check_fill(fill_mode: str, what: str) -> None:
    if fill_mode not in ("reflect", "constant", "nearest"):
        raise SpecError(f"{what} fill_mode must be 'reflect', 'constant' or 'nearest', got {fill_mode!r}")


def _factor_range(value: Any, what: str) -> tuple[float, float]:
    """Keras's factor: a number f means (-f, f), a pair (lower, upper) is taken as given."""
    pair = (-value, value) if _is_number(value) else value
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(_is_number(v) for v in pair)
            or pair[0] > pair[1]):
        raise SpecError(f"{what} must be a number or a (lower, upper) pair, got {value!r}")
    return (float(pair[0]), float(pair[1]))


def check_conv_fields(layer: Any, what: str) -> None:
    """Normalise and check the fields every convolution shares (filters, kernel_size, strides, padding,
    activation, use_bias) on a frozen layer dataclass; `what` names the layer type in errors."""
    object.__setattr__(layer, "filters", _positive_int(layer.filters, f"{what} filters"))
    object.__setattr__(layer, "kernel_size", _pair(layer.kernel_size, f"{what} kernel_size"))
    object.__setattr__(layer, "strides", _pair(layer.strides, f"{what} strides"))
    object.__setattr__(layer, "padding", _padding(layer.padding, what))
    object.__setattr__(layer, "activation", _activation(layer.activation, what))
    _check_bool(layer.use_bias, f"{what} use_bias")
