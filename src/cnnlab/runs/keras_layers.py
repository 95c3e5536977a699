"""Convert one Keras 3 layer, config dict and weights, to a cnnlab layer spec and torch tensors, and back.

`CONVERTERS` maps a Keras class name to its converter. Weights go in Keras's own order (a layer's
trainable variables, then its non-trainable ones: kernel, bias; gamma, beta, moving_mean,
moving_variance), which is also the order of the parameters and buffers of the torch child that
`cnnlab.spec.build.build` makes for the layer. Shapes: Conv2D kernel Keras HWIO (kh, kw, in, out) <-> torch
OIHW; Dense kernel Keras (in, out) <-> torch (out, in).

Flatten: Keras flattens (H, W, C) in HWC order, cnnlab's torch module flattens (C, H, W) in CHW order.
Every per-feature vector between a Flatten and the next Dense (BatchNormalization's four vectors, the
Dense kernel's rows) is therefore permuted with `perm`, where torch feature i is Keras feature perm[i].
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from cnnlab.spec import layers as L
from cnnlab.spec import merge as M
from cnnlab.spec.units import BY_TYPE, UNITS
from cnnlab.spec.units_base import (  # noqa: F401 - part of this module's interface
    _DTYPE,
    _GLOROT,
    Arrays,
    Converter,
    KerasFileError,
    Options,
    Perm,
    Tensors,
    _check_bool_key,
    _check_channels_last,
    _init,
    _no_regularisers,
    _short,
    check_common,
    read_activation,
)


def flatten_perm(shape: L.Shape) -> np.ndarray:
    """For Flatten on (H, W, C): torch's CHW-order feature i is Keras's HWC-order feature perm[i]."""
    h, w, c = shape
    return np.arange(h * w * c).reshape(h, w, c).transpose(2, 0, 1).reshape(-1)


def feature_perm(layer: L.Layer, shapes: list[L.Shape], perms: list[Perm]) -> Perm:
    """The feature permutation of `layer`'s output, from its inputs' shapes and permutations (see above):
    a Flatten of an image makes one, Dense and global pooling end it, the rest pass it on."""
    if isinstance(layer, L.Flatten) and len(shapes[0]) == 3:
        return flatten_perm(shapes[0])
    if isinstance(layer, M.Concatenate) and len(shapes[0]) == 1 and any(p is not None for p in perms):
        offsets = np.cumsum([0, *(s[0] for s in shapes[:-1])])
        return np.concatenate([(np.arange(s[0]) if p is None else p) + o for s, p, o in zip(shapes, perms, offsets)])
    if isinstance(layer, M.Add) and any(p is not None for p in perms):
        if any(p is None or not np.array_equal(p, perms[0]) for p in perms):
            raise L.SpecError(f"Add layer {layer.name!r} adds a Flatten output to a tensor in another feature "
                              "order; cnnlab cannot match Keras's layout there")
        return perms[0]
    if isinstance(layer, (L.Dense, L.GlobalAveragePooling2D)) or len(shapes[0]) == 3:
        return None  # a Dense mixes all features; image tensors are never permuted
    return perms[0]


# --- configs: Keras -> spec ----------------------------------------------------------------
def _read_conv(opts: Options, shape: L.Shape) -> L.Layer:
    _check_channels_last(opts)
    opts.expect("dilation_rate", (1, 1), 1)
    opts.expect("groups", 1)
    opts.ignore("kernel_initializer", "bias_initializer")
    _no_regularisers(opts, "kernel", "bias")
    opts.expect_null("activity_regularizer")
    return L.Conv2D(opts.get("filters"), opts.pair("kernel_size", (3, 3)), opts.pair("strides", (1, 1)),
                    opts.get("padding", "valid"), read_activation(opts), opts.get("use_bias", True),
                    name=opts.name)


def _read_separable(opts: Options, shape: L.Shape) -> L.Layer:
    _check_channels_last(opts)
    opts.expect("dilation_rate", (1, 1), 1)
    opts.ignore("depthwise_initializer", "pointwise_initializer", "bias_initializer")
    _no_regularisers(opts, "depthwise", "pointwise", "bias")
    opts.expect_null("activity_regularizer")
    return L.SeparableConv2D(opts.get("filters"), opts.pair("kernel_size", (3, 3)), opts.pair("strides", (1, 1)),
                             opts.get("padding", "valid"), read_activation(opts), opts.get("use_bias", True),
                             depth_multiplier=opts.get("depth_multiplier", 1), name=opts.name)


def _read_pool(cls: type[L._Pooling2D]) -> Callable[[Options, L.Shape], L.Layer]:
    def read(opts: Options, shape: L.Shape) -> L.Layer:
        _check_channels_last(opts)
        pool, strides = opts.pair("pool_size", (2, 2)), opts.pair("strides", None)
        pool_pair = (pool, pool) if isinstance(pool, int) else pool
        if strides == pool_pair or strides == pool:  # Keras writes the default strides out; cnnlab keeps None
            strides = None
        return cls(pool, strides, opts.get("padding", "valid"), name=opts.name)
    return read


def _read_dense(opts: Options, shape: L.Shape) -> L.Layer:
    opts.ignore("kernel_initializer", "bias_initializer")
    _no_regularisers(opts, "kernel", "bias")
    opts.expect_null("activity_regularizer", "quantization_config", "lora_rank")
    return L.Dense(opts.get("units"), read_activation(opts), opts.get("use_bias", True), name=opts.name)


def _read_batchnorm(opts: Options, shape: L.Shape) -> L.Layer:
    last = len(shape)  # Keras counts the batch axis: the channel axis of (None, H, W, C) is 3
    opts.expect("axis", -1, last, (-1,), (last,))
    opts.expect("center", True)
    opts.expect("scale", True)
    opts.expect("synchronized", False)
    opts.expect("renorm", False)
    opts.expect_null("renorm_clipping")
    opts.ignore("renorm_momentum", "beta_initializer", "gamma_initializer", "moving_mean_initializer",
                "moving_variance_initializer")
    _no_regularisers(opts, "beta", "gamma")
    return L.BatchNormalization(opts.get("momentum", 0.99), opts.get("epsilon", 1e-3), name=opts.name)


def _read_rescaling(opts: Options, shape: L.Shape) -> L.Layer:
    return L.Rescaling(opts.get("scale"), opts.get("offset", 0.0), name=opts.name)


def _read_activation(opts: Options, shape: L.Shape) -> L.Layer:
    return L.Activation(read_activation(opts) or "linear", name=opts.name)


# --- configs: spec -> Keras (keys in the order Keras 3 writes them) --------------------------
def _conv_config(spec: L.Conv2D) -> dict[str, Any]:
    return {"filters": spec.filters, "kernel_size": list(spec.kernel_size), "strides": list(spec.strides),
            "padding": spec.padding, "data_format": "channels_last", "dilation_rate": [1, 1], "groups": 1,
            "activation": spec.activation or "linear", "use_bias": spec.use_bias,
            "kernel_initializer": _GLOROT, "bias_initializer": _init("Zeros"), "kernel_regularizer": None,
            "bias_regularizer": None, "activity_regularizer": None, "kernel_constraint": None,
            "bias_constraint": None}


def _separable_config(spec: L.SeparableConv2D) -> dict[str, Any]:
    return {"depth_multiplier": spec.depth_multiplier, "filters": spec.filters, "kernel_size": list(spec.kernel_size),
            "strides": list(spec.strides), "padding": spec.padding, "data_format": "channels_last",
            "dilation_rate": [1, 1], "activation": spec.activation or "linear", "use_bias": spec.use_bias,
            "depthwise_initializer": _GLOROT, "pointwise_initializer": _GLOROT, "bias_initializer": _init("Zeros"),
            "depthwise_regularizer": None, "pointwise_regularizer": None, "bias_regularizer": None,
            "activity_regularizer": None, "depthwise_constraint": None, "pointwise_constraint": None,
            "bias_constraint": None}


def _pool_config(spec: L._Pooling2D) -> dict[str, Any]:
    return {"pool_size": list(spec.pool_size), "padding": spec.padding, "strides": list(spec.stride_pair),
            "data_format": "channels_last"}


def _dense_config(spec: L.Dense) -> dict[str, Any]:
    return {"units": spec.units, "activation": spec.activation or "linear", "use_bias": spec.use_bias,
            "kernel_initializer": _GLOROT, "bias_initializer": _init("Zeros"), "kernel_regularizer": None,
            "bias_regularizer": None, "kernel_constraint": None, "bias_constraint": None,
            "quantization_config": None}


def _batchnorm_config(spec: L.BatchNormalization) -> dict[str, Any]:
    return {"axis": -1, "momentum": spec.momentum, "epsilon": spec.epsilon, "center": True, "scale": True,
            "beta_initializer": _init("Zeros"), "gamma_initializer": _init("Ones"),
            "moving_mean_initializer": _init("Zeros"), "moving_variance_initializer": _init("Ones"),
            "beta_regularizer": None, "gamma_regularizer": None, "beta_constraint": None,
            "gamma_constraint": None, "synchronized": False, "renorm": False, "renorm_clipping": None,
            "renorm_momentum": 0.99}


def layer_config(spec: L.Layer, name: str, input_shape: L.Shape | list[L.Shape]) -> dict[str, Any]:
    """The serialised Keras layer, `{"module": "keras.layers", "class_name": ..., "config": ...}`."""
    conv = CONVERTERS.get(spec.type)
    if conv is None:
        raise ValueError(f"a .keras file cannot hold the {spec.type} layer {name!r} yet (it holds "
                         f"{', '.join(sorted(CONVERTERS))}); save the model as .safetensors instead "
                         "(model.save('model.safetensors')), which every cnnlab command reads")
    config = {"name": name, "trainable": spec.trainable, "dtype": _DTYPE, **conv.write(spec)}
    out: dict[str, Any] = {"module": "keras.layers", "class_name": spec.type, "config": config,
                           "registered_name": None}
    if conv.build_config:  # Keras records the build shape only for layers with their own build()
        shapes = input_shape if isinstance(input_shape, list) else [input_shape]
        batch = [[None, *s] for s in shapes]
        out["build_config"] = {"input_shape": batch if isinstance(input_shape, list) else batch[0]}
    return out


# --- weights ---------------------------------------------------------------------------------


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).numpy()


def _keras_order(v: np.ndarray, perm: Perm) -> np.ndarray:
    """Rows in torch feature order -> Keras feature order (inverse of `v[perm]`)."""
    return v if perm is None else v[np.argsort(perm)]


def _conv_to_keras(ts: Tensors, perm: Perm, layer: Any = None) -> Arrays:
    return [_np(ts[0]).transpose(2, 3, 1, 0), *(_np(t) for t in ts[1:])]  # OIHW -> HWIO


def _conv_to_torch(arrays: Arrays, perm: Perm, layer: Any = None) -> Tensors:
    return [torch.from_numpy(arrays[0].transpose(3, 2, 0, 1).copy()),  # HWIO -> OIHW
            *(torch.from_numpy(a.copy()) for a in arrays[1:])]


def _separable_to_keras(ts: Tensors, perm: Perm, layer: L.SeparableConv2D) -> Arrays:
    # depthwise torch (in * m, 1, kh, kw), output channel c * m + j  <->  Keras (kh, kw, in, m)
    depth = _np(ts[0])
    m = layer.depth_multiplier
    keras_depth = depth.reshape(depth.shape[0] // m, m, *depth.shape[2:]).transpose(2, 3, 0, 1)
    return [keras_depth, *_conv_to_keras(ts[1:], perm)]


def _separable_to_torch(arrays: Arrays, perm: Perm, layer: L.SeparableConv2D) -> Tensors:
    kh, kw, c, m = arrays[0].shape
    depth = arrays[0].transpose(2, 3, 0, 1).reshape(c * m, 1, kh, kw)
    return [torch.from_numpy(depth.copy()), *_conv_to_torch(arrays[1:], perm)]


def _dense_to_keras(ts: Tensors, perm: Perm, layer: Any = None) -> Arrays:
    return [_keras_order(_np(ts[0]).T, perm), *(_np(t) for t in ts[1:])]  # (out, in) -> (in, out)


def _dense_to_torch(arrays: Arrays, perm: Perm, layer: Any = None) -> Tensors:
    kernel = arrays[0] if perm is None else arrays[0][perm]
    return [torch.from_numpy(kernel.T.copy()), *(torch.from_numpy(a.copy()) for a in arrays[1:])]


def _vectors_to_keras(ts: Tensors, perm: Perm, layer: Any = None) -> Arrays:
    return [_keras_order(_np(t), perm) for t in ts]


def _vectors_to_torch(arrays: Arrays, perm: Perm, layer: Any = None) -> Tensors:
    return [torch.from_numpy((a if perm is None else a[perm]).copy()) for a in arrays]


def _read_merge(cls: type[L.Layer]) -> Callable[[Options, L.Shape], L.Layer]:
    def read(opts: Options, shape: L.Shape) -> L.Layer:
        return cls(name=opts.name) if cls is M.Add else cls(opts.get("axis", -1), name=opts.name)
    return read


CONVERTERS: dict[str, Converter] = {
    "Conv2D": Converter(_read_conv, _conv_config, _conv_to_keras, _conv_to_torch, build_config=True,
                        variables=("kernel", "bias")),
    "SeparableConv2D": Converter(_read_separable, _separable_config, _separable_to_keras, _separable_to_torch,
                                 build_config=True, variables=("depthwise_kernel", "pointwise_kernel", "bias")),
    "MaxPooling2D": Converter(_read_pool(L.MaxPooling2D), _pool_config),
    "AveragePooling2D": Converter(_read_pool(L.AveragePooling2D), _pool_config),
    "GlobalAveragePooling2D": BY_TYPE["GlobalAveragePooling2D"].keras,
    "Flatten": BY_TYPE["Flatten"].keras,
    "Dense": Converter(_read_dense, _dense_config, _dense_to_keras, _dense_to_torch, build_config=True,
                       variables=("kernel", "bias")),
    "Dropout": BY_TYPE["Dropout"].keras,
    "BatchNormalization": Converter(_read_batchnorm, _batchnorm_config, _vectors_to_keras, _vectors_to_torch,
                                    build_config=True, variables=("gamma", "beta", "moving_mean", "moving_variance")),
    "Activation": Converter(_read_activation, lambda spec: {"activation": spec.activation}),
    # a scale of the 0-255 pixels, as Keras's Rescaling on its raw input (cnnlab.spec.build keeps that meaning)
    "Rescaling": Converter(_read_rescaling, lambda spec: {"scale": spec.scale, "offset": spec.offset}),
    "Add": Converter(_read_merge(M.Add), lambda spec: {}, build_config=True),
    "Concatenate": Converter(_read_merge(M.Concatenate), lambda spec: {"axis": -1}, build_config=True),
    **{unit.spec.__name__: unit.keras for unit in UNITS},
}
# Keras never trains batch norm's statistics (Keras's names, and torch's where a layer keeps torch's layout)
NON_TRAINABLE = ("moving_mean", "moving_variance", "running_mean", "running_var")
