"""Keras layer objects and the symbolic tensors they are called on: names, calls, weights, trainable flags.

A layer object wraps a frozen spec (`cnnlab.spec.layers`, the source of truth) and adds what Keras's
layers have: a session-unique automatic name (`conv2d`, `conv2d_1`, ...), a `trainable` flag, the
nodes made by calling it on `KerasTensor`s (`layer(x)`, shapes only, nothing is computed), and once
built its own torch module, which every model using the layer shares (an activation model made from
another model's layers reads the same weights). Weights are shown in Keras's order and layout
(`cnnlab.runs.keras_layers.CONVERTERS`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from cnnlab.backend import auto_name
from cnnlab.runs.keras_layers import CONVERTERS, NON_TRAINABLE, Perm, feature_perm
from cnnlab.spec import layers as L
from cnnlab.spec.build import keras_init_, layer_module, layer_modules, set_trainable_
from cnnlab.spec.graph import AnySpec
from cnnlab.spec.merge import Merge
from cnnlab.spec.preprocess import RANDOM_MODULES


class KerasTensor:
    """A symbolic tensor: its shape `(None, H, W, C)` and the layer call that makes it (`_keras_history`)."""

    def __init__(self, shape: L.Shape, history: tuple[Any, int, int], perm: Perm = None):
        self.shape: tuple[int | None, ...] = (None, *shape)
        self.dtype = "float32"
        self.name = auto_name("keras_tensor")
        self._keras_history = history  # (layer, node index, tensor index), as Keras keeps it
        self._perm = perm  # torch feature i is Keras feature perm[i] (after a Flatten), see keras_layers

    def __repr__(self) -> str:
        return f"<KerasTensor shape={self.shape}, dtype=float32, sparse=False, ragged=False, name={self.name}>"


def build_modules(layers: list[Any], seed: int | None = None, spec: AnySpec | None = None) -> None:
    """Make the torch modules of the layers that have none yet, Keras-initialised with one generator. With the
    model's `spec` they come from the spec builder (`layer_modules`), so a layer gets the very module
    `build(spec)` gives it (an input `Rescaling` sees pixels, as on every other path)."""
    new = [layer for layer in layers if isinstance(layer, Layer) and layer._module is None]
    if seed is not None:
        torch.manual_seed(seed)
    if spec is not None:
        built = layer_modules(spec, {layer.name for layer in new})
        modules = [built[layer.name] for layer in new]
    else:  # a layer on its own, before any model holds it
        modules = [layer_module(layer.spec, layer._check_built()) for layer in new]
    keras_init_(nn.ModuleList(modules), seed)
    for layer, module in zip(new, modules):
        layer._module = module


def eager_tensor(x: Any, who: str) -> torch.Tensor:
    """A float32 torch tensor of what an eager call got (a numpy array, a tensor, nested lists)."""
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if not (t.dtype.is_floating_point or t.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)):
        raise TypeError(f"{who} takes numeric arrays, got dtype {t.dtype}")
    if t.ndim < 2:
        raise ValueError(f"{who} takes a batch (N, ...), got shape {tuple(t.shape)}")
    return t.float()


def run_eager(module: nn.Module, xs: list[torch.Tensor], training: bool | None) -> Any:
    """module(*xs) without gradients, in training mode only when asked (Dropout, batch statistics). Left unsaid
    (None), the random augmentation layers still act, as Keras 3's do (their `call` defaults to training=True):
    `data_augmentation(images)` shows augmented images."""
    was = module.training
    module.train(bool(training))
    if training is None:
        for part in module.modules():
            if isinstance(part, RANDOM_MODULES):
                part.train(True)
    try:
        with torch.no_grad():
            return module(*xs)
    finally:
        module.train(was)


def _torch_arrays(tensors: list[torch.Tensor], perm: Any, spec: Any) -> list[np.ndarray]:
    return [t.detach().cpu().numpy().copy() for t in tensors]


def _torch_tensors(arrays: list[np.ndarray], perm: Any, spec: Any) -> list[torch.Tensor]:
    return [torch.from_numpy(a) for a in arrays]


class Variable:
    """One weight as Keras shows it: `name`, `path`, Keras-layout `shape`, `trainable`; `numpy()` reads it."""

    def __init__(self, layer: Layer, index: int, name: str, trainable: bool):
        self._layer, self._index, self.name, self.trainable = layer, index, name, trainable
        self.path = f"{layer.name}/{name}"

    def numpy(self) -> np.ndarray:
        return self._layer.get_weights()[self._index]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.numpy().shape

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.numpy() if dtype is None else self.numpy().astype(dtype)

    def __repr__(self) -> str:
        return f"<Variable path={self.path}, shape={self.shape}, dtype=float32>"


class WeightViews:
    """Keras's `trainable_weights` / `non_trainable_weights`, from `weights`: for layers and models alike."""

    @property
    def weights(self) -> list[Variable]:
        return []

    @property
    def trainable_weights(self) -> list[Variable]:
        return [w for w in self.weights if w.trainable]

    @property
    def non_trainable_weights(self) -> list[Variable]:
        return [w for w in self.weights if not w.trainable]


class _Base(WeightViews):
    """What every layer object has, inputs included."""
    name: str
    _nodes: list[tuple[list[KerasTensor], KerasTensor]]

    @property
    def output(self) -> KerasTensor:
        if not self._nodes:
            raise AttributeError(f"Layer {self.name!r} has never been called and thus has no defined output")
        if len(self._nodes) > 1:
            raise AttributeError(f"Layer {self.name!r} has multiple inbound nodes; use model outputs instead")
        return self._nodes[0][1]

    @property
    def input(self) -> KerasTensor | list[KerasTensor]:
        self.output  # noqa: B018 - raises for a layer called never or more than once
        ins = self._nodes[0][0]
        return ins[0] if len(ins) == 1 and not isinstance(self, InputLayer) else ins

    def count_params(self) -> int:
        return sum(int(np.prod(w.shape)) for w in self.weights)


class InputLayer(_Base):
    """The layer behind `keras.Input(shape)`: it makes the model's input tensor and has no weights."""
    trainable = True
    built = True

    def __init__(self, shape: L.Shape, name: str | None = None):
        self.name = name or auto_name("input_layer")
        self.batch_shape = (None, *L.check_input_shape(shape))
        self._nodes = [([], KerasTensor(self.batch_shape[1:], (self, 0, 0)))]

    def get_weights(self) -> list[np.ndarray]:
        return []

    def set_weights(self, weights: list[Any]) -> None:
        if len(weights):
            raise ValueError(f"InputLayer {self.name!r} has no weights. Received: {len(weights)} arrays")

    def __repr__(self) -> str:
        return f"<InputLayer name={self.name}, built=True>"


def Input(shape: tuple[int, ...] | None = None, name: str | None = None,  # noqa: N802 - Keras's name
          batch_shape: tuple[int | None, ...] | None = None) -> KerasTensor:
    """`keras.Input(shape=(H, W, C))`: a symbolic input tensor of shape (None, H, W, C) to call layers on."""
    if shape is None and batch_shape is not None:
        shape = tuple(batch_shape[1:])
    return InputLayer(tuple(shape) if isinstance(shape, (list, tuple)) else shape, name).output


class Layer(_Base):
    """Base of cnnlab's Keras layer classes; `spec_class` is the spec it wraps, e.g. `spec.layers.Conv2D`."""
    spec_class: ClassVar[type[L.Layer]] = L.Layer

    def __init__(self, *args: Any, name: str | None = None, trainable: bool | None = None,
                 input_shape: tuple[int, ...] | None = None, **kwargs: Any):
        try:
            spec = self.spec_class(*args, **kwargs)
        except TypeError as exc:  # an argument Keras has and cnnlab does not, or a missing one
            fields = [f.name for f in dataclasses.fields(self.spec_class) if not f.kw_only]
            raise TypeError(f"{type(self).__name__}: {exc}; cnnlab's {type(self).__name__} takes "
                            f"{', '.join([*fields, 'name', 'trainable', 'input_shape'])}") from None
        # None: the spec's own default (True, but False for a pretrained backbone)
        self._setup(spec, name, spec.trainable if trainable is None else trainable, input_shape)

    @classmethod
    def from_spec(cls, spec: L.Layer, name: str | None = None) -> Layer:
        """The layer object for a spec; its name is `name`, else the spec's, else an automatic one."""
        layer = cls.__new__(cls)
        layer._setup(spec, name or spec.name, spec.trainable, spec.input_shape)
        return layer

    def _setup(self, spec: L.Layer, name: str | None, trainable: bool, input_shape: Any) -> None:
        if name is not None and not isinstance(name, str):
            raise TypeError(f"layer name must be a string, got {name!r}")
        if not isinstance(trainable, bool):
            raise TypeError(f"trainable must be True or False, got {trainable!r}")
        self.name = name or auto_name(spec.keras_name)
        L.keras_names([dataclasses.replace(spec, name=self.name)])  # letters, digits and underscores
        self._spec = dataclasses.replace(spec, name=None, trainable=True, input_shape=None)
        self._trainable = trainable
        self.declared_input_shape = L.check_input_shape(input_shape) if input_shape is not None else None
        self._nodes = []
        self._in_shape: L.Shape | list[L.Shape] | None = None
        self._in_perm: Perm = None
        self._module: nn.Module | None = None

    @property
    def spec(self) -> L.Layer:
        return dataclasses.replace(self._spec, name=self.name, trainable=self._trainable)

    # --- calling on symbolic tensors, or eagerly on arrays -------------------------------------
    def __call__(self, inputs: Any, training: bool | None = None) -> Any:
        many = isinstance(inputs, (list, tuple))
        tensors = list(inputs) if many else [inputs]
        if not all(isinstance(t, KerasTensor) for t in tensors):
            if any(isinstance(t, KerasTensor) for t in tensors):
                raise TypeError(f"layer {self.name!r} takes symbolic tensors or arrays, not both in one call")
            return self._eager(tensors, many, training)
        shapes = [tuple(t.shape[1:]) for t in tensors]
        if isinstance(self._spec, Merge):
            in_shape: L.Shape | list[L.Shape] = shapes
            out = self.spec.output_shapes(shapes)
        elif many:
            raise ValueError(f"{type(self).__name__} layer {self.name!r} takes one tensor, got a list of {len(tensors)}")
        else:
            in_shape = shapes[0]
            out = self.spec.output_shape(in_shape)
        if self._in_shape is not None and self._in_shape != in_shape:
            raise ValueError(f"layer {self.name!r} was built for input shape {self._in_shape} and cannot take "
                             f"{in_shape}; make a new layer for the new shape")
        perm = feature_perm(self.spec, shapes, [t._perm for t in tensors])
        if self._in_shape is None:
            self._in_shape, self._in_perm = in_shape, tensors[0]._perm
        tensor = KerasTensor(out, (self, len(self._nodes), 0), perm)
        self._nodes.append((tensors, tensor))
        return tensor

    def _eager(self, arrays: list[Any], many: bool, training: bool | None) -> torch.Tensor:
        """Run the layer on arrays or tensors (N, H, W, C) now, as Keras 3 does: a float32 torch tensor back,
        channels-last; the values are taken as they are (no pixel scaling). Random layers act only with
        `training=True`."""
        xs = [eager_tensor(a, self.name) for a in arrays]
        shapes = [tuple(x.shape[1:]) for x in xs]
        if not isinstance(self._spec, Merge) and many:
            raise ValueError(f"{type(self).__name__} layer {self.name!r} takes one tensor, got a list of {len(xs)}")
        in_shape: Any = shapes if isinstance(self._spec, Merge) else shapes[0]
        out_shape = self.spec.output_shapes(shapes) if isinstance(self._spec, Merge) else self.spec.output_shape(in_shape)
        if self._in_shape is None:  # built for the shape it is first called on, as Keras builds
            self._in_shape = in_shape
        elif self._in_shape != in_shape:
            raise ValueError(f"layer {self.name!r} was built for input shape {self._in_shape} and cannot take "
                             f"{in_shape}; make a new layer for the new shape")
        if self._in_perm is not None:  # built after a Flatten: its weights take features in torch's order
            xs = [x[:, torch.as_tensor(self._in_perm)] for x in xs]
        module = self.module
        device = next(module.parameters(), torch.zeros(0)).device
        out = run_eager(module, [x.movedim(-1, 1).to(device) if x.ndim == 4 else x.to(device) for x in xs], training)
        perm = feature_perm(self.spec, shapes, [None] * len(shapes))
        out = out.movedim(1, -1) if out.ndim == 4 else out
        if perm is not None:
            out = out[:, torch.as_tensor(np.argsort(perm), device=out.device)]
        assert tuple(out.shape[1:]) == tuple(out_shape)
        return out.contiguous()

    @property
    def built(self) -> bool:
        return self._in_shape is not None

    def _check_built(self) -> L.Shape | list[L.Shape]:
        if self._in_shape is None:
            raise ValueError(f"layer {self.name!r} is not built yet: call it on an input, or give the "
                             "model its input shape")
        return self._in_shape

    @property
    def module(self) -> nn.Module:
        """This layer's torch module (built and Keras-initialised on first use), shared by every model."""
        if self._module is None:
            build_modules([self])
        assert self._module is not None
        return self._module

    # --- trainable and weights ---------------------------------------------------------------
    @property
    def trainable(self) -> bool:
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"trainable must be True or False, got {value!r}")
        self._trainable = value
        if self._module is not None:
            set_trainable_(self._module, value)

    def _tensors(self) -> list[torch.Tensor]:
        """Parameters and buffers in Keras's variable order (torch's batch counter has no Keras twin)."""
        return [t for k, t in self.module.state_dict(keep_vars=True).items() if not k.endswith("num_batches_tracked")]

    def _layout(self) -> tuple[tuple[str, ...], Any, Any]:
        """(weight names, tensors -> arrays, arrays -> tensors) in Keras's layout for this layer type. A type Keras
        files do not hold (a pretrained backbone; preprocessing layers have no weights) keeps torch's names and layout."""
        conv = CONVERTERS.get(self._spec.type)
        if conv is not None:
            return conv.variables, conv.to_keras, conv.to_torch
        if isinstance(self._spec, L.PREPROCESSING_TYPES):  # no weights; its module comes with the model's build
            return (), None, None
        names = tuple(k for k in self.module.state_dict() if not k.endswith("num_batches_tracked")) if self.built else ()
        return names, _torch_arrays, _torch_tensors

    @property
    def weights(self) -> list[Variable]:
        names = self._layout()[0]
        if not names or not self.built:
            return []
        n = len(self._tensors())
        return [Variable(self, i, name, self._trainable and name.rsplit(".", 1)[-1] not in NON_TRAINABLE)
                for i, name in enumerate(names) if i < n]

    def get_weights(self) -> list[np.ndarray]:
        """The weights as numpy arrays in Keras's layout: Conv2D kernel (kh, kw, in, out) and bias,
        Dense kernel (in, out) with rows in Keras's order after a Flatten, ..."""
        to_keras = self._layout()[1]
        if to_keras is None or not self.built:
            return []
        return to_keras(self._tensors(), self._in_perm, self.spec)

    def set_weights(self, weights: list[Any]) -> None:
        current = self.get_weights()
        arrays = [np.asarray(w, dtype=np.float32) for w in weights]
        if [a.shape for a in arrays] != [c.shape for c in current]:
            raise ValueError(f"layer {self.name!r} takes {len(current)} weights of shapes "
                             f"{[c.shape for c in current]}. Received: {[a.shape for a in arrays]}")
        if not arrays:
            return
        to_torch = self._layout()[2]
        with torch.no_grad():
            for tensor, new in zip(self._tensors(), to_torch(arrays, self._in_perm, self.spec)):
                tensor.copy_(new.to(tensor.device, tensor.dtype))

    def count_params(self) -> int:
        return sum(self.spec.params(self._check_built()))  # type: ignore[arg-type]

    def get_config(self) -> dict[str, Any]:
        return {k: v for k, v in self.spec.to_dict().items() if k != "type"}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"
