"""The config.json of a Keras 3 functional model, both ways: a cnnlab `GraphSpec` <-> Keras's "Functional".

Keras writes `{"class_name": "Functional", "config": {"name", "trainable", "layers": [...], "input_layers",
"output_layers"}}`; every layer entry has its `inbound_nodes`, one per call, whose arguments are
`__keras_tensor__` objects naming the tensor they take as `keras_history` [layer, node index, 0].
Layers are listed (and the weights file numbers them) in the order of Keras's `model.layers`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from cnnlab.runs.keras_config import _input_shape, _kind
from cnnlab.runs.keras_layers import CONVERTERS, KerasFileError, Options, Perm, check_common, feature_perm, layer_config
from cnnlab.spec import layers as L
from cnnlab.spec.graph import GraphSpec, Node, Ref
from cnnlab.spec.merge import Merge

_DTYPE = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None}


def graph_walk(spec: GraphSpec) -> Iterator[tuple[L.Layer | None, str, Any, str, Perm]]:
    """(layer spec or None for an input, name, input shape(s), weights group path, feature permutation of
    its input) in `model.layers` order; the path is numbered by class, as Keras numbers it."""
    perms: dict[Ref, Perm] = {(inp.name, 0): None for inp in spec.inputs}
    first_perm: dict[str, Perm] = {}
    for node, ref in zip(spec.nodes, spec.refs()):
        shapes = [spec.shapes[r] for r in node.inbound]
        first_perm.setdefault(node.layer.name, perms[node.inbound[0]])
        perms[ref] = feature_perm(node.layer, shapes, [perms[r] for r in node.inbound])
    layers = {node.layer.name: node.layer for node in spec.nodes}
    counts: dict[str, int] = {}
    for name in spec.layer_order():
        layer = layers.get(name)
        base = layer.keras_name if layer is not None else "input_layer"
        n = counts[base] = counts.get(base, -1) + 1
        path = f"layers/{base}" + (f"_{n}" if n else "")
        if layer is None:
            yield None, name, spec.output_shapes(name), path, None
        else:
            yield layer, name, spec.input_shapes(name), path, first_perm[name]


def _tensor(spec: GraphSpec, ref: Ref) -> dict[str, Any]:
    return {"class_name": "__keras_tensor__", "config": {"shape": [None, *spec.shapes[ref]], "dtype": "float32",
                                                         "keras_history": [ref[0], ref[1], 0]}}


def _refs(refs: tuple[Ref, ...]) -> list[Any]:
    """Keras writes one input or output as [name, node, 0], several as a list of those."""
    listed = [[name, k, 0] for name, k in refs]
    return listed[0] if len(listed) == 1 else listed


def graph_config(spec: GraphSpec, name: str = "functional") -> dict[str, Any]:
    """config.json of `spec` as a Keras 3 Functional model (not compiled)."""
    entries = []
    for layer, lname, shape, _, _ in graph_walk(spec):
        if layer is None:
            entries.append({"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
                            "config": {"batch_shape": [None, *shape], "dtype": "float32", "sparse": False,
                                       "ragged": False, "name": lname, "optional": False},
                            "name": lname, "inbound_nodes": []})
            continue
        nodes = []
        for node in spec.nodes:
            if node.layer.name == lname:
                args = [_tensor(spec, r) for r in node.inbound]
                nodes.append({"args": [args] if isinstance(layer, Merge) else args, "kwargs": {}})
        entries.append({**layer_config(layer, lname, shape), "name": lname, "inbound_nodes": nodes})
    return {"module": "keras.src.models.functional", "class_name": "Functional", "registered_name": "Functional",
            "config": {"name": name, "trainable": True, "layers": entries,
                       "input_layers": _refs(tuple((i.name, 0) for i in spec.inputs)),
                       "output_layers": _refs(spec.outputs)},
            "build_config": {"input_shape": None}, "compile_config": {}}


def _read_refs(value: Any, what: str, where: str) -> list[Ref]:
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
        value = [value]
    if not isinstance(value, list) or not all(
            isinstance(v, list) and len(v) == 3 and isinstance(v[0], str) and v[1:] == [v[1], 0]
            and isinstance(v[1], int) for v in value):
        raise KerasFileError(f"{where}: the Functional config's {what} must be [name, node, 0] entries. "
                             f"Received: {what}={value!r:.80}")
    return [(v[0], v[1]) for v in value]


def _node_inputs(node: Any, lname: str, where: str) -> tuple[list[Ref], L.Shape]:
    """(tensors a call takes, the first one's shape without the batch axis) from one inbound node."""
    args = node.get("args") if isinstance(node, dict) else None
    if not isinstance(args, list) or len(args) != 1 or node.get("kwargs") not in ({}, None) and set(
            node["kwargs"]) - {"training", "mask"}:
        raise KerasFileError(f"{where}: layer {lname!r} is called in a way cnnlab does not read (one tensor "
                             f"or one list of tensors). Received: {str(node)[:80]}")
    tensors = args[0] if isinstance(args[0], list) else args
    refs, shape = [], None
    for t in tensors:
        conf = t.get("config", {}) if isinstance(t, dict) else {}
        history = conf.get("keras_history")
        if t.get("class_name") != "__keras_tensor__" or not isinstance(history, list) or len(history) != 3:
            raise KerasFileError(f"{where}: layer {lname!r} takes something other than a tensor. "
                                 f"Received: {str(t)[:80]}")
        refs.append((str(history[0]), int(history[1])))
        shape = shape or tuple(conf.get("shape") or [None])[1:]
    return refs, shape or ()


def read_graph_config(config: dict[str, Any], where: str) -> tuple[GraphSpec, str]:
    """(spec, model name) of a Keras 3 Functional config.json; KerasFileError names what cnnlab cannot honour."""
    model_conf = config.get("config")
    layer_confs = model_conf.get("layers") if isinstance(model_conf, dict) else None
    if not isinstance(layer_confs, list) or not all(
            isinstance(c, dict) and isinstance(c.get("config"), dict) for c in layer_confs):
        raise KerasFileError(f"{where}: the Functional config has no list of layer objects")
    missing = sorted({k for c in layer_confs if (k := _kind(c)) not in CONVERTERS and k != "InputLayer"})
    if missing:
        raise KerasFileError(f"{where}: cnnlab has no layer type(s) {', '.join(missing)}; "
                             f"it reads {', '.join(CONVERTERS)}")
    model_opts = Options("Functional", model_conf, where)
    check_common(model_opts)
    model_opts.ignore("layers", "input_layers", "output_layers")
    model_opts.finish()
    inputs: dict[str, L.Input] = {}
    pending: list[tuple[L.Layer, list[Ref]]] = []  # every call of every layer, in file order
    for conf in layer_confs:
        lname = str(conf.get("name") or conf["config"].get("name"))
        if conf["class_name"] == "InputLayer":
            inputs[lname] = L.Input(_input_shape({}, [conf], where), lname)
            continue
        calls = [_node_inputs(node, lname, where) for node in conf.get("inbound_nodes") or []]
        opts = Options(conf["class_name"], conf["config"], where)
        try:
            check_common(opts)
            layer = CONVERTERS[conf["class_name"]].read(opts, calls[0][1] if calls else ())
            opts.finish()
            layer = dataclasses.replace(layer, name=lname, trainable=opts.config.get("trainable", True))
        except L.SpecError as exc:
            raise KerasFileError(f"{where}: {conf['class_name']} layer {lname!r}: {exc}") from None
        pending += [(layer, refs) for refs, _ in calls]
    nodes = _in_computable_order(pending, set((name, 0) for name in inputs), where)
    try:
        spec = GraphSpec(tuple(inputs[name] for name, _ in _read_refs(model_conf.get("input_layers"),
                                                                      "input_layers", where)),
                         tuple(nodes), tuple(_read_refs(model_conf.get("output_layers"), "output_layers", where)))
    except (L.SpecError, KeyError) as exc:
        raise KerasFileError(f"{where}: {exc}") from None
    return spec, str(model_conf.get("name") or "functional")


def _in_computable_order(pending: list[tuple[L.Layer, list[Ref]]], ready: set[Ref], where: str) -> list[Node]:
    """The calls ordered so that each comes after the calls making its inputs (a layer's k-th call makes (name, k))."""
    made: dict[str, int] = {}
    nodes: list[Node] = []
    while pending:
        for i, (layer, refs) in enumerate(pending):
            earlier_call = any(other.name == layer.name for other, _ in pending[:i])
            if not earlier_call and all(r in ready for r in refs):
                nodes.append(Node(layer, tuple(refs)))
                ready.add((layer.name, made.setdefault(layer.name, 0)))
                made[layer.name] += 1
                del pending[i]
                break
        else:
            raise KerasFileError(f"{where}: the Functional graph has calls whose inputs no layer makes: "
                                 f"{', '.join(layer.name for layer, _ in pending[:5])}")
    return nodes
