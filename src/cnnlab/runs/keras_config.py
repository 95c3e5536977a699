"""The config.json of a Keras 3 Sequential model, both ways: a cnnlab `ModelSpec` <-> Keras's serialised model.

Keras writes `{"module": "keras", "class_name": "Sequential", "config": {"name", "layers": [InputLayer,
layer, ...], "build_input_shape"}, "build_config", "compile_config"}`; each layer is converted by
`cnnlab.runs.keras_layers.CONVERTERS`. Functional models are `cnnlab.runs.keras_graph`'s.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from cnnlab.runs.keras_layers import (
    CONVERTERS,
    KerasFileError,
    Options,
    Perm,
    check_common,
    feature_perm,
    layer_config,
)
from cnnlab.spec import layers as L


def walk(spec: L.ModelSpec) -> Iterator[tuple[L.Layer, str, L.Shape, str, Perm]]:
    """(layer, name, input shape, weights group path, feature permutation of its input) per layer."""
    in_shapes = [spec.input_shape, *spec.shapes()[:-1]]
    counts: dict[str, int] = {}
    perm: Perm = None
    for layer, name, shape in zip(spec.layers, spec.names, in_shapes):
        n = counts[layer.keras_name] = counts.get(layer.keras_name, -1) + 1
        yield layer, name, shape, f"layers/{layer.keras_name}" + (f"_{n}" if n else ""), perm
        perm = feature_perm(layer, [shape], [perm])


def model_config(spec: L.ModelSpec, name: str = "sequential") -> dict[str, Any]:
    """config.json of `spec` as a Keras 3 Sequential (not compiled: compile_config is empty)."""
    batch_shape = [None, *spec.input_shape]
    dtype = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None}
    first = {"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
             "config": {"batch_shape": batch_shape, "dtype": "float32", "sparse": False, "ragged": False,
                        "name": "input_layer", "optional": False}}
    layer_list = [first, *(layer_config(layer, lname, shape) for layer, lname, shape, _, _ in walk(spec))]
    return {"module": "keras", "class_name": "Sequential", "registered_name": None,
            "config": {"name": name, "trainable": True, "dtype": dtype, "layers": layer_list,
                       "build_input_shape": batch_shape},
            "build_config": {"input_shape": batch_shape}, "compile_config": {}}


def _input_shape(model_conf: dict[str, Any], layer_confs: list[dict[str, Any]], where: str) -> L.Shape:
    """(H, W, C) from the InputLayer, else from the model's or the first layer's build shape."""
    if layer_confs and layer_confs[0].get("class_name") == "InputLayer":
        opts = Options("InputLayer", layer_confs[0].get("config") or {}, where)
        opts.ignore("name")
        for key in ("sparse", "ragged", "optional"):
            opts.expect(key, False)
        if opts.get("dtype", "float32") not in ("float32", None):
            raise opts.fail("dtype", opts.config["dtype"], "dtype='float32'")
        shape, key = opts.get("batch_shape") or opts.get("batch_input_shape"), "batch_shape"
        opts.finish()
    else:
        first = layer_confs[0].get("build_config", {}) if layer_confs else {}
        shape, key = model_conf.get("build_input_shape") or first.get("input_shape"), "build_input_shape"
    ok = (isinstance(shape, list) and len(shape) in (2, 4) and shape[0] is None
          and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape[1:]))
    if not ok:
        raise KerasFileError(f"{where}: cnnlab needs a fixed input shape [None, H, W, C] or [None, features]. "
                             f"Received: {key}={shape!r}")
    return tuple(shape[1:])


def _kind(conf: dict[str, Any]) -> str:
    """A layer's Keras class name; a class from outside Keras (a custom layer) is named by its registration,
    so that a custom layer called "Conv2D" is not taken for Keras's own."""
    name, module, registered = conf.get("class_name"), conf.get("module"), conf.get("registered_name")
    if str(module).split(".")[0] == "keras" and registered in (None, name):
        return str(name)
    return str(registered or f"{module}.{name}")


def read_config(config: Any, where: str = "config.json") -> tuple[L.ModelSpec, str]:
    """(spec, model name) of a Keras 3 Sequential config.json; KerasFileError names what cnnlab cannot honour."""
    if not isinstance(config, dict) or config.get("class_name") != "Sequential" or not isinstance(
            config.get("config"), dict):
        kind = config.get("class_name") if isinstance(config, dict) else type(config).__name__
        raise KerasFileError(f"{where}: cnnlab reads Keras Sequential models. Received: class_name={kind!r}")
    model_conf = config["config"]
    layer_confs = model_conf.get("layers")
    if not isinstance(layer_confs, list) or not all(
            isinstance(c, dict) and isinstance(c.get("config"), dict) for c in layer_confs):
        raise KerasFileError(f"{where}: the Sequential config has no list of layer objects")
    kinds = [_kind(c) for c in layer_confs]
    missing = sorted({k for i, k in enumerate(kinds) if k not in CONVERTERS and not (k == "InputLayer" and i == 0)})
    if missing:
        raise KerasFileError(f"{where}: cnnlab has no layer type(s) {', '.join(missing)}; "
                             f"it reads {', '.join(CONVERTERS)}")
    model_opts = Options("Sequential", model_conf, where)
    check_common(model_opts)
    model_opts.ignore("layers", "build_input_shape")
    model_opts.finish()
    shape = input_shape = _input_shape(model_conf, layer_confs, where)
    specs = []
    for conf in layer_confs[1:] if kinds and kinds[0] == "InputLayer" else layer_confs:
        opts = Options(conf["class_name"], conf["config"], where)
        try:
            check_common(opts)
            layer = dataclasses.replace(CONVERTERS[conf["class_name"]].read(opts, shape),
                                        trainable=opts.config.get("trainable", True))
            opts.finish()
            shape = layer.output_shape(shape)
        except L.SpecError as exc:
            raise KerasFileError(f"{where}: {conf['class_name']} layer {opts.name!r}: {exc}") from None
        specs.append(layer)
    # A name Keras gave automatically is the one cnnlab would give too: leave it unset, so that the
    # spec equals the one written by hand; `spec.names` is the same either way.
    specs = L.drop_auto_names(specs)
    try:
        spec = L.ModelSpec(tuple(specs), input_shape)
        spec.shapes()
    except L.SpecError as exc:
        raise KerasFileError(f"{where}: {exc}") from None
    return spec, str(model_conf.get("name") or "sequential")
