"""Build a plain `torch.nn.Sequential` from a `ModelSpec`, one child per Keras layer, named as Keras names it.

The module takes float input (B, C, H, W) scaled to [0, 1] and returns logits: a trailing softmax (or
the sigmoid of a one-unit binary head) in the spec is left to the loss (training) and to `predict`
(inference), which is numerically safer and lets the fast path fuse log-softmax into the cross-entropy.
"""
from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.spec import layers as L
from cnnlab.spec import merge as M
from cnnlab.spec import preprocess
from cnnlab.spec.backbone import backbone_layer
from cnnlab.spec.conv_arithmetic import same_padding
from cnnlab.spec.graph import GraphSpec
from cnnlab.spec.nested import NESTED_TYPES, NestedModel, passes_pixels
from cnnlab.spec.units import UNITS
from cnnlab.spec.units_base import ACTIVATION_MODULES


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


def _conv_padding(spec: L.Conv2D, shape: L.Shape, parts: dict[str, nn.Module]) -> tuple[int, int]:
    """torch's symmetric padding for the conv, or a ZeroPad2d part for TF's uneven 'same' padding."""
    h, w, _ = shape
    (kh, kw), (sh, sw) = spec.kernel_size, spec.strides
    if spec.padding == "valid":
        return (0, 0)
    (top, bottom), (left, right) = same_padding(h, kh, sh), same_padding(w, kw, sw)
    if top == bottom and left == right:
        return (top, left)
    parts["pad"] = nn.ZeroPad2d((left, right, top, bottom))  # TF puts the odd row/column of padding after
    return (0, 0)


def _conv(spec: L.Conv2D, shape: L.Shape) -> nn.Module:
    parts: dict[str, nn.Module] = {}
    padding = _conv_padding(spec, shape, parts)
    parts["conv"] = nn.Conv2d(shape[2], spec.filters, spec.kernel_size, spec.strides, padding, bias=spec.use_bias)
    return _block(parts, spec.activation)


def _separable(spec: L.SeparableConv2D, shape: L.Shape) -> nn.Module:
    parts: dict[str, nn.Module] = {}
    c, mid = shape[2], shape[2] * spec.depth_multiplier
    padding = _conv_padding(spec, shape, parts)
    parts["depthwise"] = nn.Conv2d(c, mid, spec.kernel_size, spec.strides, padding, groups=c, bias=False)
    parts["pointwise"] = nn.Conv2d(mid, spec.filters, 1, bias=spec.use_bias)
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


class _FreezableNorm:
    """Keras runs a frozen (trainable=False) BatchNormalization in inference mode, even while training."""
    frozen = False

    def train(self, mode: bool = True) -> nn.Module:
        return super().train(mode and not self.frozen)  # type: ignore[misc]


class BatchNorm2d(_FreezableNorm, nn.BatchNorm2d):
    pass


class BatchNorm1d(_FreezableNorm, nn.BatchNorm1d):
    pass


class AddN(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.stack(xs).sum(0)


class ConcatChannels(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:  # channels: axis 1 of (B, C, H, W) and of (B, F)
        return torch.cat(xs, 1)


def _batchnorm(spec: L.BatchNormalization, shape: L.Shape) -> nn.Module:
    norm = BatchNorm2d if len(shape) == 3 else BatchNorm1d
    # Keras's momentum weights the old statistic; torch's weights the new one.
    return norm(shape[-1], eps=spec.epsilon, momentum=1 - spec.momentum)


BUILDERS: dict[type, Callable[..., nn.Module]] = {
    L.Conv2D: _conv,
    L.SeparableConv2D: _separable,
    L.MaxPooling2D: _pool,
    L.AveragePooling2D: _pool,
    L.Dense: _dense,
    L.BatchNormalization: _batchnorm,
    L.Activation: lambda spec, shape: (ACTIVATION_MODULES[spec.activation]() if spec.activation != "linear"
                                       else nn.Identity()),
    M.Add: lambda spec, shapes: AddN(),
    M.Concatenate: lambda spec, shapes: ConcatChannels(),
    **preprocess.BUILDERS,
    **{kind: lambda spec, shape: backbone_layer(spec, shape, ACTIVATION_MODULES) for kind in L.BACKBONE_TYPES},
    # a nested model: its own module, with the softmax it ends in (only the outer model leaves its last one out)
    **{kind: lambda spec, shape: build(spec.model, logits=False) for kind in NESTED_TYPES},
    **{unit.spec: unit.build for unit in UNITS},
}


class GraphModule(nn.Module):
    """A functional model's torch module: one child per layer, named as the layer, run in node order.
    `forward(*images)` takes (B, C, H, W) batches, one per input, and returns a tensor, or a list for
    several outputs."""

    def __init__(self, spec: GraphSpec, children: dict[str, nn.Module]):
        super().__init__()
        for name in spec.names:
            self.add_module(name, children[name])
        self.input_refs = [(inp.name, 0) for inp in spec.inputs]
        self.plan = [(ref, node.layer.name, node.inbound) for ref, node in zip(spec.refs(), spec.nodes)]
        self.output_refs = list(spec.outputs)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        values = dict(zip(self.input_refs, xs))
        for ref, name, inbound in self.plan:
            values[ref] = self._modules[name](*(values[r] for r in inbound))
        outs = [values[r] for r in self.output_refs]
        return outs[0] if len(outs) == 1 else outs


def layer_module(layer: L.Layer, shape: L.Shape | list[L.Shape], at_pixels: bool = False) -> nn.Module:
    """The torch module of one layer spec for an input of `shape` (a list of shapes for a merge layer);
    `at_pixels`: the layer sees the input image itself (see `preprocess.rescaling`)."""
    module = (preprocess.rescaling(layer, at_pixels) if isinstance(layer, L.Rescaling)
              else BUILDERS[type(layer)](layer, shape))
    if not isinstance(layer, NestedModel):  # a nested model's layers keep their own flags
        set_trainable_(module, layer.trainable)
    return module


def set_trainable_(module: nn.Module, trainable: bool) -> None:
    """Freeze or unfreeze a layer's module: no gradients, and batch norm in inference mode, as Keras does."""
    if hasattr(module, "set_flags"):  # a pretrained backbone: its own layers keep their flags under it
        module.set_flags(trainable, module.frozen_layers)
        return
    for p in module.parameters():
        p.requires_grad_(trainable)
    for m in module.modules():
        if isinstance(m, _FreezableNorm):
            m.frozen = not trainable


def without_softmax(module: nn.Module) -> nn.Module:
    """The same layer (same parameter objects) with its trailing softmax (or binary sigmoid) left out."""
    if hasattr(module, "without_activation"):  # a layer that knows its own parts (a pretrained backbone)
        return module.without_activation()
    if isinstance(module, (nn.Softmax, nn.Sigmoid)):
        return nn.Identity()
    if isinstance(module, nn.Sequential) and "act" in module._modules:
        return nn.Sequential(OrderedDict((k, m) for k, m in module.named_children() if k != "act"))
    return module


def softmax_layer(spec: L.ModelSpec | GraphSpec) -> str | None:
    """The name of the layer whose softmax the module leaves out (the last layer of a single-output
    model, called once), or None."""
    if isinstance(spec, GraphSpec):
        outs = spec.outputs
        if len(outs) != 1 or sum(n.layer.name == outs[0][0] for n in spec.nodes) != 1:
            return None
        last = next(n.layer for n in spec.nodes if n.layer.name == outs[0][0])
    else:
        last = spec.layers[-1] if spec.layers else None
    return last.name if getattr(last, "activation", None) == "softmax" else None


def ends_in_softmax(spec: L.ModelSpec | GraphSpec) -> bool:
    if isinstance(spec, GraphSpec):
        return softmax_layer(spec) is not None
    last = spec.layers[-1] if spec.layers else None
    return getattr(last, "activation", None) == "softmax"


def ends_in_sigmoid(spec: L.ModelSpec | GraphSpec) -> bool:
    """A binary head: one sigmoid unit (Dense(1, activation="sigmoid")); its logit is left to the loss too."""
    last = _last_layer(spec)
    if getattr(last, "activation", None) != "sigmoid":
        return False
    shape = spec.output_shapes(last.name) if isinstance(spec, GraphSpec) else spec.shapes()[-1]
    return shape[-1] == 1


def class_count(spec: L.ModelSpec | GraphSpec) -> int:
    """How many classes the (first) output names: its units, or 2 for a binary head, whose one sigmoid unit
    gives both classes' probabilities (`cnnlab.runs.predict.probabilities`)."""
    shape = spec.shapes[spec.outputs[0]] if isinstance(spec, GraphSpec) else spec.shapes()[-1]
    return 2 if ends_in_sigmoid(spec) else int(shape[-1])


def head_layer(spec: L.ModelSpec | GraphSpec) -> str | None:
    """The layer whose final activation (softmax, or a binary head's sigmoid) the module leaves to the loss."""
    return _last_layer(spec).name if ends_in_softmax(spec) or ends_in_sigmoid(spec) else None


def _last_layer(spec: L.ModelSpec | GraphSpec) -> L.Layer | None:
    if isinstance(spec, GraphSpec):
        name = softmax_layer(spec) or (spec.outputs[0][0] if len(spec.outputs) == 1 else None)
        return next((n.layer for n in spec.nodes if n.layer.name == name), None)
    return dataclasses.replace(spec.layers[-1], name=spec.names[-1]) if spec.layers else None


def assemble(spec: L.ModelSpec | GraphSpec, children: dict[str, nn.Module], logits: bool = True) -> nn.Module:
    """The model's module from its layers' modules (shared, not copied): an nn.Sequential for a layer
    list, a GraphModule for a graph; with `logits` the final softmax (or binary sigmoid) is left out."""
    names = list(spec.names)
    last = head_layer(spec) if logits else None
    if last is not None:
        children = {**children, last: without_softmax(children[last])}
    if isinstance(spec, GraphSpec):
        return GraphModule(spec, children)
    return nn.Sequential(OrderedDict((name, children[name]) for name in names))


def layer_modules(spec: L.ModelSpec | GraphSpec, names: set[str] | None = None) -> dict[str, nn.Module]:
    """The torch module of each layer of `spec` (of those in `names`, when given), by layer name: the one
    place a layer spec becomes a module, for `build` and for Keras layer objects alike."""
    if isinstance(spec, GraphSpec):
        return {name: layer_module(layer, spec.input_shapes(name), graph_at_pixels(spec, name))
                for name, layer in zip(spec.names, spec.layers) if names is None or name in names}
    in_shapes = [spec.input_shape, *spec.shapes()[:-1]]
    return {name: layer_module(dataclasses.replace(layer, name=name), shape, preprocess.at_pixels(spec, i))
            for i, (layer, name, shape) in enumerate(zip(spec.layers, spec.names, in_shapes))
            if names is None or name in names}


def build(spec: L.ModelSpec | GraphSpec, *, logits: bool = True) -> nn.Module:
    """The torch module of `spec`; with `logits` a final softmax is left out (see module docstring)."""
    return assemble(spec, layer_modules(spec), logits)


def graph_at_pixels(spec: GraphSpec, name: str) -> bool:
    """Whether layer `name` sees an input image's values: only random augmentation layers on the way."""
    inputs = {inp.name for inp in spec.inputs}
    nodes = {n.layer.name: n for n in spec.nodes}

    def raw(source: str) -> bool:
        if source in inputs:
            return True
        layer = nodes[source].layer
        return passes_pixels(layer) and all(raw(s) for s, _ in nodes[source].inbound)
    return name in nodes and all(raw(s) for s, _ in nodes[name].inbound)


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
                if isinstance(m, nn.Conv2d) and m.groups > 1:  # Keras's depthwise kernel (kh, kw, in, multiplier)
                    fan_in, fan_out = m.in_channels * receptive, m.out_channels // m.groups * receptive
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
