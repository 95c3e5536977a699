"""A whole model used as one layer of another (Keras's nested models): an augmentation pipeline, a shared
sub-network, a pretrained base.

`Sequential(model=ModelSpec)` and `Functional(model=GraphSpec)` are layer specs whose type is what Keras's
summary prints for a nested model; their shape and parameters are the inner model's, their JSON holds it
whole (`{"type": "Sequential", "name": ..., "model": {...}}`). Importing this module adds both types to the
layer registries the JSON readers use (`layers.LAYER_TYPES`, `graph.GRAPH_TYPES`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from cnnlab.spec import layers as L
from cnnlab.spec.base import _fmt
from cnnlab.spec.graph import GRAPH_TYPES, AnySpec, GraphSpec, spec_from_dict
from cnnlab.spec.image_layers import RandomFlip, RandomRotation, RandomZoom
from cnnlab.spec.summary import summary_dict


@dataclass(frozen=True)
class NestedModel(L.Layer):
    model: Any  # the inner model's spec (a JSON dict is read into one)
    keras_name: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            object.__setattr__(self, "model", spec_from_dict(self.model))
        if not isinstance(self.model, (L.ModelSpec, GraphSpec)):
            raise L.SpecError(f"{self.type} needs a model spec, got {self.model!r}")
        if len(self.inputs()) != 1 or len(self.outputs()) != 1:
            raise L.SpecError(f"a model used as a layer takes one input and gives one output; {self.name!r} has "
                              f"{len(self.inputs())} and {len(self.outputs())}")

    def inputs(self) -> list[L.Shape]:
        return [i.shape for i in self.model.inputs] if isinstance(self.model, GraphSpec) else [self.model.input_shape]

    def outputs(self) -> list[L.Shape]:
        if isinstance(self.model, GraphSpec):
            return [self.model.shapes[r] for r in self.model.outputs]
        return [self.model.shapes()[-1]]

    def output_shape(self, shape: L.Shape) -> L.Shape:
        expected = self.inputs()[0]
        if tuple(shape) != tuple(expected):
            raise self._fail(shape, f"the model was built for input shape {_fmt(expected)}")
        return self.outputs()[0]

    def params(self, shape: L.Shape) -> tuple[int, int]:
        info = summary_dict(self.model)
        return info["trainable_params"], info["non_trainable_params"]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "model": self.model.to_dict()}
        if self.name is not None:
            out["name"] = self.name
        return out

    def with_trainable(self, trainable: bool) -> NestedModel:
        """The same model with every layer's trainable flag set (Keras's `model.trainable = ...`)."""
        if isinstance(self.model, GraphSpec):
            nodes = tuple(dataclasses.replace(n, layer=_trainable(n.layer, trainable)) for n in self.model.nodes)
            inner: AnySpec = GraphSpec(self.model.inputs, nodes, self.model.outputs)
        else:
            inner = L.ModelSpec(tuple(_trainable(x, trainable) for x in self.model.layers), self.model.input_shape)
        return dataclasses.replace(self, model=inner)


def _trainable(layer: L.Layer, trainable: bool) -> L.Layer:
    return layer.with_trainable(trainable) if isinstance(layer, NestedModel) else dataclasses.replace(layer, trainable=trainable)


@dataclass(frozen=True)
class Sequential(NestedModel):
    keras_name: ClassVar[str] = "sequential"


@dataclass(frozen=True)
class Functional(NestedModel):
    keras_name: ClassVar[str] = "functional"


NESTED_TYPES = (Sequential, Functional)
AUGMENTATION_TYPES = (RandomFlip, RandomRotation, RandomZoom)


def passes_pixels(layer: L.Layer) -> bool:
    """Whether the layer's output still holds the input image's pixel values (moved, not rescaled): a random
    augmentation layer, or a nested model made of them alone."""
    if isinstance(layer, NestedModel):
        return all(passes_pixels(x) for x in layer.model.layers)
    return isinstance(layer, AUGMENTATION_TYPES)


L.LAYER_TYPES.update({cls.__name__: cls for cls in NESTED_TYPES})
GRAPH_TYPES.update({cls.__name__: cls for cls in NESTED_TYPES})
