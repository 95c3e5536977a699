"""`keras.Model(inputs, outputs)`: a functional model, the graph of layer calls between its inputs and outputs.

The model's spec is a `GraphSpec` (JSON, `.keras` files); its torch module is a `GraphModule` over the
layers' own modules, so two models made of the same layer objects share their weights (an activation
model `Model(model.input, [l.output for l in model.layers])` reads what `model` learnt). `Model` also
holds what Sequential shares: layers by name, weights, trainable flags, summary, save.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from cnnlab import keras_loop
from cnnlab.backend import auto_name
from cnnlab.runs.keras_file import save_keras
from cnnlab.spec import layers as L
from cnnlab.spec import nested as NS
from cnnlab.spec.build import assemble
from cnnlab.spec.graph import GraphSpec, Node, Ref
from cnnlab.spec.summary import summary_text
from cnnlab.symbolic import InputLayer, KerasTensor, Layer, Variable, WeightViews, build_modules, run_eager
from cnnlab.train.device_data import scale
from cnnlab.training import Trainer


def _as_list(x: Any) -> list[Any]:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _channels_last(x: np.ndarray) -> np.ndarray:
    return x.transpose(0, 2, 3, 1) if x.ndim == 4 else x  # torch (N, C, H, W) -> Keras (N, H, W, C)


class Model(WeightViews, Trainer):
    """Keras's functional `Model(inputs=..., outputs=...)`; outputs may be one tensor or a list."""

    def __init__(self, inputs: KerasTensor | list[KerasTensor], outputs: KerasTensor | list[KerasTensor],
                 name: str | None = None, trainable: bool = True):
        self.name = name or auto_name("functional")
        self._start()
        self._inputs, self._outputs = _as_list(inputs), _as_list(outputs)
        for t in [*self._inputs, *self._outputs]:
            if not isinstance(t, KerasTensor):
                raise TypeError(f"Model inputs and outputs are keras.Input(...) tensors and layer outputs. "
                                f"Received: {type(t).__name__}")
        self._nodes, self._by_name = _trace(self._inputs, self._outputs)
        if not trainable:
            self.trainable = False

    def _start(self) -> None:
        self._module: nn.Module | None = None
        self._train_options: dict[str, Any] = {}
        self._loss: str | None = None
        self._trainable = True
        self.class_names: list[str] | None = None
        self.preprocessing: dict[str, Any] = {}

    # --- the graph --------------------------------------------------------------------------
    @property
    def spec(self) -> GraphSpec:
        local: dict[tuple[int, int], int] = {}  # (layer id, node index) -> index among the graph's calls
        counts: dict[int, int] = {}
        for layer, k in sorted(self._nodes, key=lambda n: n[1]):
            local[(id(layer), k)] = counts.get(id(layer), 0)
            counts[id(layer)] = local[(id(layer), k)] + 1

        def ref(t: KerasTensor) -> Ref:
            layer, k, _ = t._keras_history
            return (layer.name, 0) if isinstance(layer, InputLayer) else (layer.name, local[(id(layer), k)])

        inputs = tuple(L.Input(t._keras_history[0].batch_shape[1:], t._keras_history[0].name) for t in self._inputs)
        nodes = tuple(Node(layer.spec, tuple(ref(p) for p in layer._nodes[k][0]))
                      for layer, k in self._nodes if not isinstance(layer, InputLayer))
        return GraphSpec(inputs, nodes, tuple(ref(t) for t in self._outputs))

    @property
    def layers(self) -> list[Any]:
        """Every layer, inputs first, in Keras's order (deepest first); a nested model is listed as itself."""
        return [as_shown(self._by_name[name]) for name in self.spec.layer_order()]

    def _weighted(self) -> list[Layer]:
        return [self._by_name[n] for n in self.spec.layer_order() if isinstance(self._by_name[n], Layer)]

    def get_layer(self, name: str | None = None, index: int | None = None) -> Any:
        if index is not None:
            if not -len(self.layers) <= index < len(self.layers):
                raise ValueError(f"Was asked to retrieve layer at index {index} but model only has "
                                 f"{len(self.layers)} layers")
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"No such layer: {name}. Existing layers are: {[layer.name for layer in self.layers]}")

    @property
    def inputs(self) -> list[KerasTensor]:
        return list(self._inputs)

    @property
    def outputs(self) -> list[KerasTensor]:
        return list(self._outputs)

    @property
    def input(self) -> KerasTensor | list[KerasTensor]:
        return self.inputs[0] if len(self.inputs) == 1 else self.inputs

    @property
    def output(self) -> KerasTensor | list[KerasTensor]:
        return self.outputs[0] if len(self.outputs) == 1 else self.outputs

    # --- the torch module -------------------------------------------------------------------
    @property
    def built(self) -> bool:
        return self._module is not None

    def build(self, input_shape: tuple[int, ...] | None = None, seed: int | None = None) -> nn.Module:
        """Make the layers' torch modules that do not exist yet (Keras-initialised, seeded by `seed`)."""
        if self._module is None:
            spec = self.spec
            build_modules(self._weighted(), seed, spec)
            self._module = assemble(spec, {layer.name: layer.module for layer in self._weighted()})
        return self._module

    @property
    def module(self) -> nn.Module:
        return self.build()

    @property
    def num_classes(self) -> int:
        return int(self._outputs[0].shape[-1])

    # --- weights and trainable flags ----------------------------------------------------------
    @property
    def trainable(self) -> bool:
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        self._trainable = value
        for layer in self._weighted():
            layer.trainable = value

    @property
    def weights(self) -> list[Variable]:
        self.build()
        return [w for layer in self._weighted() for w in layer.weights]

    def get_weights(self) -> list[np.ndarray]:
        self.build()
        return [w for layer in self._weighted() for w in layer.get_weights()]

    def set_weights(self, weights: list[Any]) -> None:
        self.build()
        weights = list(weights)
        counts = [len(layer.get_weights()) for layer in self._weighted()]
        if len(weights) != sum(counts):
            raise ValueError(f"model {self.name!r} has {sum(counts)} weights. Received: {len(weights)} arrays")
        for layer, n in zip(self._weighted(), counts):
            layer.set_weights(weights[:n])
            weights = weights[n:]

    def count_params(self) -> int:
        return sum(layer.count_params() for layer in self._weighted())

    def summary(self, print_fn: Callable[[str], None] = print, style: str = "keras3") -> None:
        print_fn(summary_text(self.spec, self.name, style))

    # --- calls --------------------------------------------------------------------------------
    def as_layer(self) -> ModelLayer:
        """This model as one layer of another (made once: every call is a node of the same layer)."""
        if getattr(self, "_layer_view", None) is None:
            self._layer_view = ModelLayer(self)
        return self._layer_view

    def __call__(self, inputs: Any, training: bool | None = None) -> Any:
        """On symbolic tensors: this model as one layer of the model being made (Keras's nested models).

        On arrays or tensors: the outputs now (torch tensors, channels-last, the final softmax applied), as
        Keras 3 with the torch backend returns them; `training=True` runs Dropout and the random layers.
        Images follow cnnlab's convention (uint8 pixels, or floats in [0, 1]); a model of random augmentation
        layers alone gives uint8 pixels back as 0-255 floats, as Keras's does."""
        symbolic = [t for t in _as_list(inputs) if isinstance(t, KerasTensor)]
        if self._module is None and not isinstance(inputs, (list, tuple, dict)):
            # a Sequential learns its input shape here, as Keras's
            self.build(tuple(inputs.shape[1:] if symbolic else np.shape(inputs)[1:]))
        if symbolic:
            return self.as_layer()(inputs)
        xs = keras_loop.inputs_of(self, inputs, pixels_only=False)
        module = self.module
        device = next(module.parameters(), torch.zeros(0)).device
        heads = keras_loop.Heads(self, keras_loop._head_activation(self))
        batch = [scale(torch.as_tensor(x).permute(0, 3, 1, 2).to(device)) for x in xs]
        outs = [heads.probabilities(o) for o in heads.keras(run_eager(module, batch, training))]
        if xs[0].dtype in (np.uint8, torch.uint8) and all(isinstance(layer, Layer) and layer.spec.type.startswith("Random")
                                                         for layer in self._weighted()):
            outs = [o * 255.0 for o in outs]  # flips, turns and zooms move pixels without changing their scale
        return outs[0] if len(outs) == 1 else outs

    # --- inference, training, files -----------------------------------------------------------
    def predict(self, x: Any, batch_size: int = 2000, verbose: int | str = 0) -> np.ndarray | list[np.ndarray]:
        """Class probabilities, or the outputs themselves; a list of arrays for several outputs.
        Outputs are in Keras's layout: images channels-last (N, H, W, C), flattened features in HWC order."""
        if len(self.inputs) > 1 or isinstance(x, (list, tuple, dict)):
            outs = keras_loop.predict_outputs(self, keras_loop.inputs_of(self, x), batch_size)
            return outs[0] if len(outs) == 1 else outs
        if self._output_count() == 1:
            outs = [super().predict(x, batch_size, verbose)]
        else:
            xs = self._device_images(x)
            device = next(self.module.parameters(), torch.zeros(0)).device
            self.module.eval()
            with torch.inference_mode():
                parts = [self.module(scale(xs[i:i + batch_size].to(device))) for i in range(0, len(xs), batch_size)]
            outs = [torch.cat([p[j] for p in parts]).float().cpu().numpy() for j in range(len(self._outputs))]
        outs = [_channels_last(o) if t._perm is None else o[:, np.argsort(t._perm)] for o, t in zip(outs, self.outputs)]
        return outs[0] if self._output_count() == 1 else outs

    def _output_count(self) -> int:
        return len(self._outputs)

    def save(self, path: str | os.PathLike) -> None:
        """`.keras`: a Keras 3 file Keras opens; `.safetensors`: cnnlab's own (weights + spec + class names)."""
        if Path(path).suffix == ".keras":
            nested = [x.name for x in self._weighted() if isinstance(x, ModelLayer)]
            if nested:
                raise ValueError(f"cnnlab cannot write .keras files of models that hold other models yet ({nested}); "
                                 "save a .safetensors file instead")
            names = self.class_names if self._output_count() == 1 else None
            save_keras(self.spec, self.module, path, names, self.name)
        else:
            super().save(path)


class ModelLayer(Layer):
    """A model called on symbolic tensors inside another model: one layer (one summary row, one child module)
    over the inner model's own layers, whose weights and trainable flags it reads and sets."""

    def __init__(self, model: Model):
        self.model = model
        self.spec_class = NS.Sequential if isinstance(model.spec, L.ModelSpec) else NS.Functional
        self._setup(self.spec_class(model=model.spec), model.name, True, None)
        try:
            inputs = model.inputs
        except AttributeError:  # a Sequential without its input shape yet: it learns it when called
            inputs = []
        self.declared_input_shape = tuple(inputs[0].shape[1:]) if len(inputs) == 1 else None

    @property
    def spec(self) -> NS.NestedModel:
        return self.spec_class(model=self.model.spec, name=self.name)

    @property  # type: ignore[override]
    def _module(self) -> nn.Module:
        """The inner layers' modules (shared with the inner model) with the softmax the model ends in; made on
        first use, so no builder ever makes a fresh copy of the inner layers."""
        if self.__dict__.get("_assembled") is None:
            self.model.build()
            self._assembled = assemble(self.model.spec, {x.name: x.module for x in self.model._weighted()},
                                       logits=False)
        return self._assembled

    @_module.setter
    def _module(self, value: nn.Module | None) -> None:
        self._assembled = value

    @property  # type: ignore[override]
    def trainable(self) -> bool:
        return self.model.trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        self.model.trainable = value

    @property
    def weights(self) -> list[Variable]:
        return self.model.weights

    def get_weights(self) -> list[np.ndarray]:
        return self.model.get_weights()

    def set_weights(self, weights: list[Any]) -> None:
        self.model.set_weights(weights)

    def count_params(self) -> int:
        return self.model.count_params()


def as_shown(layer: Any) -> Any:
    """What `model.layers` lists for a layer of the graph: a nested model as the model object itself."""
    return layer.model if isinstance(layer, ModelLayer) else layer


def _trace(inputs: list[KerasTensor], outputs: list[KerasTensor]) -> tuple[list[tuple[Any, int]], dict[str, Any]]:
    """(layer calls in an order that computes each before its use, layers by name), walking back from the
    outputs to the inputs as Keras's `functional._build_map` does."""
    input_ids = {id(t) for t in inputs}
    for t in inputs:
        if not isinstance(t._keras_history[0], InputLayer):
            raise ValueError(f"Model inputs must be keras.Input(...) tensors. Received: the output of layer "
                             f"{t._keras_history[0].name!r}")
    order: list[tuple[Any, int]] = []
    seen: set[tuple[int, int]] = set()

    def visit(t: KerasTensor) -> None:
        layer, k, _ = t._keras_history
        if (id(layer), k) in seen:
            return
        seen.add((id(layer), k))
        if isinstance(layer, InputLayer):
            if id(t) not in input_ids:
                raise ValueError(f"Graph disconnected: the outputs need input {layer.name!r}, which is not "
                                 "among the model's inputs")
        else:
            for parent in layer._nodes[k][0]:
                visit(parent)
        order.append((layer, k))

    for t in outputs:
        visit(t)
    by_name: dict[str, Any] = {t._keras_history[0].name: t._keras_history[0] for t in inputs}
    for layer, _ in order:
        if by_name.setdefault(layer.name, layer) is not layer:
            raise ValueError(f"The name {layer.name!r} is used 2 times in the model. All layer names should be unique")
    return order, by_name
