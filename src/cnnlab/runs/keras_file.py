"""Read and write Keras 3 `.keras` files (zip: metadata.json, config.json, model.weights.h5), Sequential and functional.

The file is laid out as Keras 3 writes it, so `keras.models.load_model` opens what `save_keras` writes
and `load_keras` opens what `model.save("x.keras")` writes. The weights file holds one group per layer,
`layers/<snake_case class name>[_N]/vars` with datasets `0`, `1`, ... (the path is numbered by class,
as Keras does it; the layer's own name is the group's `name` attribute). Nothing is unpickled or
evaluated: config.json is JSON, the weights are plain HDF5 float arrays, links and external storage
are refused.
"""
from __future__ import annotations

import datetime
import io
import json
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import nn

from cnnlab.fsutil import atomic_write_bytes
from cnnlab.runs.keras_config import model_config, read_config, walk
from cnnlab.runs.keras_graph import graph_config, graph_walk, read_graph_config
from cnnlab.runs.keras_layers import CONVERTERS, KerasFileError
from cnnlab.runs.model_file import MAX_JSON_BYTES, ModelFileError, check_json_size
from cnnlab.spec.build import build, class_count
from cnnlab.spec.graph import AnySpec, GraphSpec
from cnnlab.spec.memory import check_memory
from cnnlab.spec.summary import summary_dict

KERAS_VERSION = "3.15.1"  # the Keras release whose layout this mirrors; Keras's loader does not read it
CONFIG, METADATA, WEIGHTS = "config.json", "metadata.json", "model.weights.h5"
_MAX_LAYERS = 4096  # ResNet152 has 566 layers, EfficientNetB7 813, NASNetLarge 1041; more: a hostile or broken file
_SLACK_BYTES = 64 << 20  # HDF5 overhead allowed beyond the float32 weights the config asks for
_CHUNK = 1 << 20  # zip entries are read this much at a time, so an entry lying about its size fails early


@dataclass
class KerasModel:
    """What a .keras file holds, in cnnlab's terms: the spec, torch weights (keys of `build(spec)`), names."""
    spec: AnySpec
    state: dict[str, torch.Tensor]
    name: str = "sequential"
    class_names: list[str] | None = None

    def module(self) -> nn.Module:
        """The torch module (logits, see `cnnlab.spec.build`), weights loaded, in eval mode."""
        module = build(self.spec)
        module.load_state_dict(self.state, strict=True)
        return module.eval()


def _child_tensors(module: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """A layer's parameters and buffers in Keras's variable order; torch's batch counter has no Keras twin."""
    children = dict(module.named_children())
    if name not in children:
        raise ValueError(f"the module has no layer {name!r}; expected the module cnnlab.spec.build.build(spec) makes. "
                         f"Received children: {', '.join(children) or 'none'}")
    child = children[name]
    return {k: t for k, t in child.state_dict().items() if not k.endswith("num_batches_tracked")}


# --- writing ---------------------------------------------------------------------------------
def _walk(spec: AnySpec) -> Any:
    """(layer or None for an input, name, input shape, weights group path, feature permutation) per layer."""
    return graph_walk(spec) if isinstance(spec, GraphSpec) else walk(spec)


def _weights_bytes(spec: AnySpec, module: nn.Module, name: str) -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_group("vars").attrs["name"] = name  # the model's own (empty) variable group
        for layer, lname, _, path, perm in _walk(spec):
            group = f.create_group(f"{path}/vars")
            group.attrs["name"] = lname
            to_keras = CONVERTERS[layer.type].to_keras if layer is not None else None
            if to_keras is not None:
                for i, array in enumerate(to_keras(list(_child_tensors(module, lname).values()), perm, layer)):
                    group[str(i)] = np.ascontiguousarray(array, dtype=np.float32)
    return buf.getvalue()


def keras_bytes(spec: AnySpec, module: nn.Module, class_names: list[str] | None = None,
                name: str = "sequential") -> bytes:
    """The bytes of a .keras file for `spec` with `module`'s weights (see `save_keras`)."""
    if spec.input_shape is None:
        raise KerasFileError("the model has no input shape: give input_shape=(H, W, C) to the first layer")
    metadata: dict[str, Any] = {"keras_version": KERAS_VERSION,
                                "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")}
    if class_names is not None:  # Keras ignores extra metadata; cnnlab reads its class names back
        metadata["cnnlab"] = {"class_names": [str(c) for c in class_names]}
    config = graph_config(spec, name) if isinstance(spec, GraphSpec) else model_config(spec, name)
    members = {METADATA: json.dumps(metadata).encode(), CONFIG: json.dumps(config).encode(),
               WEIGHTS: _weights_bytes(spec, module, name)}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:  # stored, not deflated, as Keras writes it
        for member, data in members.items():
            zf.writestr(member, data)
    return buf.getvalue()


def save_keras(spec: AnySpec, module: nn.Module, path: str | os.PathLike,
               class_names: list[str] | None = None, name: str = "sequential") -> Path:
    """Write `spec` and `module`'s weights as a Keras 3 `.keras` file, atomically (old file or new, never half)."""
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"Keras model files end in .keras. Received: {str(path)!r}")
    data = keras_bytes(spec, module, class_names, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    return path


# --- reading ---------------------------------------------------------------------------------
def _read_member(zf: zipfile.ZipFile, member: str, where: str, limit: int) -> bytes:
    try:
        info = zf.getinfo(member)
    except KeyError:
        raise KerasFileError(f"{where}: not a complete .keras file, it has no {member} "
                             f"(members: {', '.join(zf.namelist()) or 'none'})") from None
    if info.file_size > limit:
        raise KerasFileError(f"{where}: {member} is {info.file_size:,} bytes, more than the {limit:,} "
                             "the model's config justifies")
    if info.flag_bits & 0x1:
        raise KerasFileError(f"{where}: {member} is encrypted; a .keras file is never encrypted")
    parts, size = [], 0
    try:  # bounded chunks: a deflated entry inflates no further than the limit, whatever its header says
        with zf.open(info) as f:
            while block := f.read(_CHUNK):
                size += len(block)
                if size > limit:
                    raise KerasFileError(f"{where}: {member} holds more than the {limit:,} bytes "
                                         f"{'its header' if info.file_size <= limit else 'the config'} allows")
                parts.append(block)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError, zlib.error) as exc:
        raise KerasFileError(f"{where}: damaged {member} ({exc})") from None
    return b"".join(parts)


def _read_json(raw: bytes, where: str, member: str) -> Any:
    """json.loads, refused first when the text holds more values than a model config has (memory, time)."""
    try:
        check_json_size(raw, where, member)
    except ModelFileError as exc:
        raise KerasFileError(str(exc)) from None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise KerasFileError(f"{where}: {member} is not valid JSON ({exc})") from None

def _dataset(group: h5py.Group, key: str, where: str) -> h5py.Dataset:
    """A plain dataset of floats: no soft or external links, no external or virtual storage."""
    link = group.get(key, getclass=True, getlink=True)
    if link is not h5py.HardLink:
        raise KerasFileError(f"{where}: {group.name}/{key} is {getattr(link, '__name__', 'missing')}, "
                             "expected a dataset")
    ds = group[key]
    if (not isinstance(ds, h5py.Dataset) or ds.external or ds.is_virtual or ds.dtype.kind != "f"
            or ds.dtype.itemsize > 8):  # float16 to float64: what the memory budget allows for
        raise KerasFileError(f"{where}: {group.name}/{key} is not a plain float dataset")
    return ds


def _group(f: h5py.File, path: str, where: str) -> h5py.Group | None:
    node = f
    for part in path.split("/"):
        if part not in node:
            return None
        if node.get(part, getclass=True, getlink=True) is not h5py.HardLink:
            raise KerasFileError(f"{where}: {node.name}/{part} is a link, expected a group")
        node = node[part]
        if not isinstance(node, h5py.Group):
            raise KerasFileError(f"{where}: {node.name} is not a group")
    return node


def _read_weights(raw: bytes, spec: AnySpec, where: str) -> dict[str, torch.Tensor]:
    module = build(spec)
    state = module.state_dict()
    try:
        with h5py.File(io.BytesIO(raw), "r") as f:
            for layer, lname, _, path, perm in _walk(spec):
                to_torch = CONVERTERS[layer.type].to_torch if layer is not None else None
                if to_torch is None:
                    continue
                wanted = _child_tensors(module, lname)
                group = _group(f, f"{path}/vars", where) or _group(
                    f, f"{path.replace('layers', '_layer_checkpoint_dependencies', 1)}/vars", where)  # Keras 2.13
                keys = sorted(group.keys(), key=lambda k: (len(k), k)) if group is not None else []
                if keys != [str(i) for i in range(len(wanted))]:
                    raise KerasFileError(f"{where}: {WEIGHTS} has variables {keys} for layer {lname!r} at {path}, "
                                         f"expected {len(wanted)} (0 to {len(wanted) - 1})")
                arrays = []
                expected_shapes = [a.shape for a in CONVERTERS[layer.type].to_keras(list(wanted.values()), perm, layer)]
                for key, expected in zip(keys, expected_shapes):
                    ds = _dataset(group, key, where)
                    if ds.shape != expected:
                        raise KerasFileError(f"{where}: variable {key} of layer {lname!r} has shape {ds.shape}, "
                                             f"expected {expected}")
                    array = np.asarray(ds[()], dtype=np.float32)
                    if not np.isfinite(array).all():
                        raise KerasFileError(f"{where}: variable {key} of layer {lname!r} holds NaN or infinite "
                                             "values; refusing to load it")
                    arrays.append(array)
                for tname, tensor in zip(wanted, to_torch(arrays, perm, layer)):
                    state[f"{lname}.{tname}"] = tensor
    except (OSError, KeyError) as exc:  # h5py's error for a damaged file
        raise KerasFileError(f"{where}: {WEIGHTS} is not a readable HDF5 file ({exc})") from None
    return state


def load_keras(path: str | os.PathLike) -> KerasModel:
    """Read a Keras 3 `.keras` Sequential or functional model: spec, torch weights, name, and class names if cnnlab wrote them."""
    where = str(path)
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise KerasFileError(f"no .keras file at {where!r}") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise KerasFileError(f"{where}: not a .keras file, the zip archive is damaged ({exc})") from None
    with zf:
        if WEIGHTS not in zf.namelist() and "model.weights.npz" in zf.namelist():
            raise KerasFileError(f"{where}: cnnlab reads weights saved as {WEIGHTS}. Received: model.weights.npz")
        config = _read_json(_read_member(zf, CONFIG, where, MAX_JSON_BYTES), where, CONFIG)
        spec, name = _spec_of(config, where)
        check_memory(spec, 1, False, f"the model in {where}")  # the declared shapes, before anything is allocated
        class_names = None
        if METADATA in zf.namelist():
            meta = _read_json(_read_member(zf, METADATA, where, MAX_JSON_BYTES), where, METADATA)
            class_names = _class_names(meta, spec, where)
        floats = summary_dict(spec)["total_params"]
        raw = _read_member(zf, WEIGHTS, where, 4 * floats * 2 + _SLACK_BYTES)  # float64 weights are allowed
        if 4 * floats > 100 * len(raw) + _SLACK_BYTES:  # a config asking for far more than the file holds
            raise KerasFileError(f"{where}: the config asks for {floats:,} weights but {WEIGHTS} "
                                 f"is only {len(raw):,} bytes")
    return KerasModel(spec, _read_weights(raw, spec, where), name, class_names)


def _spec_of(config: Any, where: str) -> tuple[AnySpec, str]:
    """The spec of config.json; a hostile or broken config is a one-line KerasFileError, never a traceback."""
    layers = config.get("config", {}).get("layers") if isinstance(config, dict) and isinstance(
        config.get("config"), dict) else None
    if isinstance(layers, list) and len(layers) > _MAX_LAYERS:
        raise KerasFileError(f"{where}: {CONFIG} has {len(layers):,} layers, more than the {_MAX_LAYERS:,} "
                             "cnnlab reads")
    try:
        if isinstance(config, dict) and config.get("class_name") == "Functional":
            return read_graph_config(config, f"{where} ({CONFIG})")
        return read_config(config, f"{where} ({CONFIG})")
    except (KeyError, AttributeError, TypeError, IndexError, ValueError, OverflowError, RecursionError) as exc:
        if isinstance(exc, KerasFileError):
            raise
        raise KerasFileError(f"{where}: {CONFIG} is not a model config cnnlab can read "
                             f"({type(exc).__name__}: {str(exc)[:100]})") from None


def _class_names(meta: Any, spec: AnySpec, where: str) -> list[str] | None:
    names = meta.get("cnnlab", {}).get("class_names") if isinstance(meta, dict) and isinstance(
        meta.get("cnnlab"), dict) else None
    if names is None:
        return None
    count = class_count(spec)
    if (not isinstance(names, list) or not all(isinstance(n, str) for n in names)
            or len(names) != count):
        raise KerasFileError(f"{where}: {METADATA} must list {count} class names as strings. "
                             f"Received: class_names={names!r:.80}")
    return names
