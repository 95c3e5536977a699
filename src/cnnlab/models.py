"""Keras-shaped models: `Sequential` (add layers, build, summary), the functional `Model`, and `load_model`.

A thin facade: a Sequential's spec is a `ModelSpec` (layer list) and its network the `nn.Sequential`
of its layers' own torch modules (`model.module`); training is `cnnlab.train.fit.fit` (see
`cnnlab.training`). Everything else a model has (weights, trainable, get_layer, save) is `Model`'s.
"""
from __future__ import annotations

import os
from typing import Any

from torch import nn

from cnnlab import layers as KL
from cnnlab.backend import auto_name
from cnnlab.functional import Model, as_shown
from cnnlab.runs.open_model import open_model
from cnnlab.spec.build import assemble, place
from cnnlab.spec.graph import AnySpec
from cnnlab.spec.layers import Input as InputSpec
from cnnlab.spec.layers import Layer as LayerSpec
from cnnlab.spec.layers import ModelSpec, SpecError, drop_auto_names
from cnnlab.spec.merge import Merge
from cnnlab.spec.nested import NestedModel
from cnnlab.symbolic import Input, InputLayer, KerasTensor, Layer, build_modules
from cnnlab.train.fit import resolve_device


class Sequential(Model):
    """A stack of layers, as `keras.Sequential`; the torch module is `model.module` once built."""

    def __init__(self, layers: list[Any] | None = None, name: str | None = None, trainable: bool = True):
        self.name = name or auto_name("sequential")
        self._start()
        self._layers: list[Layer] = []
        self._input: KerasTensor | None = None
        self._tensors: list[KerasTensor] = []  # each layer's output, once the input shape is known
        self._names: set[str] = set()  # the layers' names and how many of each Keras class, so that add() is
        self._kind_counts: dict[str, int] = {}  # O(1): a 100,000-layer file loads in linear time
        for layer in layers or []:
            self.add(layer, rebuild=False)
        self._maybe_rebuild()
        if not trainable:
            self.trainable = False

    # --- building -------------------------------------------------------------------------
    def add(self, layer: Any, rebuild: bool = True) -> None:
        """Append a layer: a `layers.X(...)` object (named when made, conv2d_3), or a spec of
        `cnnlab.spec.layers` (named within the model, as a JSON layer list is); `Input(shape)` may come first."""
        if self._module is not None:
            raise SpecError("cannot add layers to a model that is already built or trained")
        if isinstance(layer, (InputSpec, KerasTensor, InputLayer)):
            if self._layers or self._input is not None:
                raise SpecError("Input must come before every other layer")
            self._input = (Input(layer.shape, layer.name) if isinstance(layer, InputSpec)
                           else layer.output if isinstance(layer, InputLayer) else layer)
            return
        if isinstance(layer, Model):  # a model as one layer (Keras's nested models)
            layer = layer.as_layer()
        if isinstance(layer, LayerSpec):  # a spec is named within its model, as in a JSON layer list
            n = self._kind_counts.get(layer.keras_name, 0)
            auto = layer.keras_name if n == 0 else f"{layer.keras_name}_{n}"  # as keras_names counts
            layer = _layer_from_spec(layer, layer.name or auto)
        if not isinstance(layer, Layer):
            raise SpecError(f"add() takes a layer such as layers.Conv2D(32, (3, 3)), got {layer!r}")
        if layer.name in self._names:
            raise SpecError(f"layer name {layer.name!r} is used twice; layer names must be unique")
        self._names.add(layer.name)
        kind = layer.spec.keras_name
        self._kind_counts[kind] = self._kind_counts.get(kind, 0) + 1
        if not self._layers and self._input is None and layer.declared_input_shape is not None:
            self._input = Input(layer.declared_input_shape)
        self._layers.append(layer)
        if self._input is not None:
            self._connect()
        if rebuild:
            self._maybe_rebuild()

    def _maybe_rebuild(self) -> None:
        """Keras remakes a Sequential's inner functional model whenever it knows its input and layers; each
        takes the next automatic name functional, functional_1, ... so the names of later models follow."""
        if self._input is not None and self._layers:
            auto_name("functional")

    def _connect(self) -> None:
        """Call the layers not yet called on the symbolic tensor before them (shapes only)."""
        assert self._input is not None
        for layer in self._layers[len(self._tensors):]:
            self._tensors.append(layer(self._tensors[-1] if self._tensors else self._input))

    @property
    def spec(self) -> ModelSpec:
        shape = tuple(self._input.shape[1:]) if self._input is not None else None
        return ModelSpec(tuple(drop_auto_names([layer.spec for layer in self._layers])), shape)  # type: ignore[arg-type]

    @property
    def layers(self) -> list[Any]:
        return [as_shown(layer) for layer in self._layers]

    def _weighted(self) -> list[Layer]:
        return list(self._layers)

    def build(self, input_shape: tuple[Any, ...] | None = None, seed: int | None = None) -> nn.Module:
        """Make the torch module (Keras-initialised); `input_shape` is (H, W, C), or (None, H, W, C) as Keras takes."""
        if self._module is None:
            if self._input is None:
                if input_shape is None:
                    raise SpecError("the model has no input shape: give input_shape=(H, W, C) to the first layer, "
                                    "start with keras.Input, or call build((None, H, W, C))")
                shape = tuple(input_shape)
                self._input = Input(shape[1:] if shape and shape[0] is None else shape)
                self._connect()
                self._maybe_rebuild()
            spec = self.spec
            spec.shapes()  # raises SpecError naming the first layer that cannot fit
            build_modules(self._layers, seed, spec)
            self._module = assemble(spec, {layer.name: layer.module for layer in self._layers})
        return self._module

    @property
    def inputs(self) -> list[KerasTensor]:
        if self._input is None:
            raise AttributeError(f"Sequential model {self.name!r} has no input yet: give it an input shape")
        return [self._input]

    @property
    def outputs(self) -> list[KerasTensor]:
        return [self._tensors[-1]] if self._tensors else self.inputs

    @property
    def num_classes(self) -> int:
        return self.spec.shapes()[-1][-1]

    def _output_count(self) -> int:
        return 1


def model_from_spec(spec: AnySpec, name: str) -> Model:
    """A Sequential (layer list) or functional Model (graph) made of new layer objects named as in `spec`."""
    if isinstance(spec, ModelSpec):
        return Sequential([InputSpec(spec.input_shape), *(_layer_from_spec(layer, n) for layer, n in
                                                          zip(spec.layers, spec.names))], name=name)
    tensors = {(inp.name, 0): Input(inp.shape, inp.name) for inp in spec.inputs}
    objects: dict[str, Layer] = {}
    for node, ref in zip(spec.nodes, spec.refs()):
        layer = objects.get(node.layer.name) or objects.setdefault(node.layer.name, _layer_from_spec(node.layer))
        args = [tensors[r] for r in node.inbound]
        tensors[ref] = layer(args if isinstance(node.layer, Merge) else args[0])
    return Model([tensors[(inp.name, 0)] for inp in spec.inputs], [tensors[r] for r in spec.outputs], name=name)


def _layer_from_spec(spec: LayerSpec, name: str | None = None) -> Layer:
    """The layer object of a spec; a nested model's is a new model of its own, used as a layer."""
    if isinstance(spec, NestedModel):
        inner = model_from_spec(spec.model, name or spec.name or spec.keras_name)
        weighted = inner._weighted()
        inner._trainable = not weighted or any(layer.trainable for layer in weighted)  # saved as its layers' flags
        return inner.as_layer()
    return KL.from_spec(spec, name)


def load_model(path: str | os.PathLike, device: str = "cpu") -> Model:
    """Load a model saved by `model.save` or `cnnlab train`: a `.keras` file (Keras 3's own, or cnnlab's),
    a `.safetensors` file or a run folder (`cnnlab.runs.open_model`, the one way in)."""
    opened = open_model(path)
    model = model_from_spec(opened.spec, opened.name)
    model.module.load_state_dict(opened.state, strict=True)
    model.class_names = opened.class_names
    model.preprocessing = opened.preprocessing
    if not opened.is_keras_file:  # a .keras file loads uncompiled, as Keras's does without a compile_config
        model._loss = "sparse_categorical_crossentropy"
    place(model.module, resolve_device(device))
    model.module.eval()
    return model


__all__ = ["Model", "Sequential", "load_model", "model_from_spec"]
