"""What every layer unit shares: the `Unit` record, and the helpers that read and write Keras 3 layer configs.

A layer type is one unit (`cnnlab.spec.units.<type>`): its spec dataclass, torch builder, Keras config and
weight conversion, and compact token together; the registries (`spec.layers.LAYER_TYPES`,
`spec.build.BUILDERS`, `runs.keras_layers.CONVERTERS`, `spec.compact`, `cnnlab.layers`) are derived from
`cnnlab.spec.units.UNITS`. Units hold torch code, unlike the rest of `cnnlab.spec`.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab.spec import checks as C
from cnnlab.spec.base import Layer, Shape

# the torch module of each activation name; the one table every builder takes them from
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
Perm = np.ndarray | None  # torch feature i of a flattened image is Keras feature perm[i]; None: same order
Arrays = list[np.ndarray]
Tensors = list[torch.Tensor]
_DTYPE = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None}
_GLOROT = {"module": "keras.initializers", "class_name": "GlorotUniform",
           "config": {"seed": None, "input_axes": None, "output_axes": None}, "registered_name": None}


def _init(class_name: str) -> dict[str, Any]:
    return {"module": "keras.initializers", "class_name": class_name, "config": {}, "registered_name": None}


class KerasFileError(ValueError):
    """A .keras file is damaged, or holds a layer or option that cnnlab cannot honour."""


class Options:
    """A Keras layer config being read: every key is used, checked against what cnnlab can honour,
    or known to be harmless; `finish` rejects the rest unless they are null or false."""

    def __init__(self, class_name: str, config: dict[str, Any], where: str):
        self.class_name, self.config, self.where = class_name, config, where
        self.name = config.get("name")
        self._seen: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self._seen.add(key)
        return self.config.get(key, default)

    def ignore(self, *keys: str) -> None:
        """Keys that change nothing once the weights are loaded (initialisers, dropout's seed)."""
        self._seen.update(keys)

    def expect(self, key: str, *allowed: Any) -> None:
        """`key` must hold one of `allowed` (missing reads as the first); lists compare as tuples."""
        value = self.get(key, allowed[0])
        if (tuple(value) if isinstance(value, list) else value) not in allowed:
            raise self.fail(key, value, " or ".join(f"{key}={a!r}" for a in allowed))

    def expect_null(self, *keys: str) -> None:
        for key in keys:
            self.expect(key, None)

    def pair(self, key: str, default: Any) -> Any:
        value = self.get(key, default)
        return tuple(value) if isinstance(value, list) else value

    def fail(self, key: str, value: Any, expected: str) -> KerasFileError:
        return KerasFileError(f"{self.where}: {self.class_name} layer {self.name!r}: cnnlab supports only "
                              f"{expected}. Received: {key}={_short(value)}")

    def finish(self) -> None:
        for key, value in self.config.items():
            if key not in self._seen and value not in (None, False, [], {}):  # a newer Keras's unset option
                raise KerasFileError(f"{self.where}: {self.class_name} layer {self.name!r} has option {key!r} "
                                     f"that cnnlab does not know. Received: {key}={_short(value)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_common(opts: Options) -> None:
    """The keys every Keras layer has: a float32 dtype policy, and trainable."""
    opts.get("name")
    _check_bool_key(opts, "trainable")
    dtype = opts.get("dtype")
    policy = dtype.get("config", {}).get("name") if isinstance(dtype, dict) else dtype
    if policy not in (None, "float32"):
        raise opts.fail("dtype", policy, "dtype='float32'")


def _check_bool_key(opts: Options, key: str) -> None:
    if not isinstance(opts.get(key, True), bool):
        raise opts.fail(key, opts.config[key], f"{key} true or false")


def read_activation(opts: Options, key: str = "activation") -> str | None:
    value = opts.get(key, "linear")
    if isinstance(value, dict) and str(value.get("module", "")).startswith("keras") and isinstance(
            value.get("config"), str):  # a built-in activation serialised as an object
        value = value["config"]
    if value != "linear" and value not in C.ACTIVATIONS:
        raise opts.fail(key, value, f"{key} one of {', '.join(C.ACTIVATIONS)}")
    return None if value == "linear" else value


def _check_channels_last(opts: Options) -> None:
    opts.expect("data_format", "channels_last", None)  # None: Keras's default, channels_last


def _no_regularisers(opts: Options, *weights: str) -> None:
    opts.expect_null(*(f"{w}_{what}" for w in weights for what in ("regularizer", "constraint")))


@dataclass(frozen=True)
class Converter:
    """How one Keras layer class maps to a cnnlab spec: config both ways, weights both ways (None: no weights)."""
    read: Callable[[Options, Shape], Layer]
    write: Callable[[Any], dict[str, Any]]
    to_keras: Callable[[Tensors, Perm, Any], Arrays] | None = None
    to_torch: Callable[[Arrays, Perm, Any], Tensors] | None = None
    build_config: bool = False
    variables: tuple[str, ...] = ()  # Keras's names of the weights, in order



def decimal(x: float) -> str:
    """A number as compact tokens write it: 0.5, 0.25, no trailing zeros."""
    return f"{x:.8f}".rstrip("0").rstrip(".") or "0"


@dataclass(frozen=True)
class Compact:
    """The layer's token in the one-line model format: a regex, the spec from its groups, the token of a spec."""
    pattern: re.Pattern[str]
    parse: Callable[[tuple[Any, ...]], Layer]
    format: Callable[[Any], str]
    example: str


@dataclass(frozen=True)
class Unit:
    """One layer type, whole: spec class, torch module for an input shape, Keras converter, compact token."""
    spec: type[Layer]
    build: Callable[[Any, Shape], nn.Module]
    keras: Converter
    compact: Compact | None = None
