"""Keras-shaped models: `Sequential` (add layers, build, summary) and `load_model`; training is in `cnnlab.training`.

A thin facade: the layer list is a `ModelSpec`, the network is the plain torch module that
`cnnlab.spec.build.build` makes from it (`model.module`), and training is `cnnlab.train.fit.fit`.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import torch

from cnnlab.runs import model_file
from cnnlab.spec.build import new_module, place
from cnnlab.spec.layers import Input, Layer, ModelSpec, SpecError
from cnnlab.spec.summary import summary_dict, summary_text
from cnnlab.train.fit import resolve_device
from cnnlab.training import Trainer


class Sequential(Trainer):
    """A stack of layers, as `keras.Sequential`; the torch module is `model.module` once built."""

    def __init__(self, layers: list[Layer | Input] | None = None, name: str = "sequential"):
        self.name = name
        self._layers: list[Layer] = []
        self._input_shape: tuple[int, ...] | None = None
        self._module: torch.nn.Sequential | None = None
        self._train_options: dict[str, Any] = {}
        self._loss: str | None = None
        self.class_names: list[str] | None = None
        self.preprocessing: dict[str, Any] = {}
        for layer in layers or []:
            self.add(layer)

    # --- building -------------------------------------------------------------------------
    def add(self, layer: Layer | Input) -> None:
        if self._module is not None:
            raise SpecError("cannot add layers to a model that is already built or trained")
        if isinstance(layer, Input):
            if self._layers:
                raise SpecError("Input must come before every other layer")
            self._input_shape = layer.shape
            return
        if not isinstance(layer, Layer):
            raise SpecError(f"add() takes a layer such as layers.Conv2D(32, (3, 3)), got {layer!r}")
        self._layers.append(layer)
        self.spec.names  # noqa: B018 - validates unique names now, where the mistake was made

    @property
    def spec(self) -> ModelSpec:
        spec = ModelSpec(tuple(self._layers))
        shape = self._input_shape or spec.input_shape
        return spec.with_input_shape(shape) if shape else spec

    @property
    def layers(self) -> list[Layer]:
        return list(self._layers)

    @property
    def built(self) -> bool:
        return self._module is not None

    def build(self, input_shape: tuple[int, ...] | None = None, seed: int | None = None) -> torch.nn.Sequential:
        """Make the torch module (Keras-initialised); `input_shape` is (H, W, C) without the batch axis."""
        if self._module is None:
            if input_shape is not None and self.spec.input_shape is None:
                self._input_shape = tuple(input_shape)
            spec = self.spec
            spec.shapes()  # raises SpecError naming the first layer that cannot fit
            self._module = new_module(spec, seed)
        return self._module

    @property
    def module(self) -> torch.nn.Sequential:
        if self._module is None:
            raise SpecError("the model is not built yet: give input_shape to the first layer, or call fit/build")
        return self._module

    @property
    def num_classes(self) -> int:
        return self.spec.shapes()[-1][-1]

    def summary(self, print_fn: Callable[[str], None] = print, style: str = "keras3") -> None:
        print_fn(summary_text(self.spec, self.name, style))

    def count_params(self) -> int:
        return summary_dict(self.spec)["total_params"]


def load_model(path: str | os.PathLike, device: str = "cpu") -> Sequential:
    """Load a model saved by `model.save` or `cnnlab train` (a .safetensors file or a run folder)."""
    saved = model_file.read_model(path)
    model = Sequential(name=saved.name)
    model._layers = list(saved.spec.layers)
    model._input_shape = saved.spec.input_shape
    model._module = place(saved.module(), resolve_device(device))
    model.class_names = saved.class_names
    model.preprocessing = saved.preprocessing
    model._loss = "sparse_categorical_crossentropy"
    return model
