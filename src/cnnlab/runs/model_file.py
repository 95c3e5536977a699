"""Model files and run folders: safetensors weights with the spec, class names and preprocessing beside them.

Nothing is ever pickled or unpickled: a model file from a stranger is tensors plus JSON.
"""
from __future__ import annotations

import csv
import hashlib
import io as _io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as st_save

from cnnlab.errors import ModelFileError
from cnnlab.fsutil import atomic_write_bytes, atomic_write_text
from cnnlab.spec.build import build, class_count, place
from cnnlab.spec.graph import AnySpec, spec_from_dict
from cnnlab.spec.layers import SpecError
from cnnlab.spec.memory import check_memory
from cnnlab.spec.summary import summary_dict
from cnnlab.tensor_file import check_tensors, read_safetensors, tensor_digest

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
MNIST_STYLE_DATA = ("mnist", "emnist-digits")  # digit sets whose new images predict centres as MNIST's were


@dataclass
class SavedModel:
    """What a model file holds: enough to rebuild the module and preprocess its inputs."""
    spec: AnySpec
    state: dict[str, torch.Tensor]
    class_names: list[str]
    preprocessing: dict[str, Any] = field(default_factory=dict)
    name: str = "sequential"

    def module(self) -> torch.nn.Sequential:
        module = build(self.spec)
        try:
            module.load_state_dict(self.state, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise ModelFileError(f"the weights do not fit the model's spec: {first}") from None
        return place(module, torch.device("cpu")).eval()


def model_bytes(spec: AnySpec, module: torch.nn.Module, class_names: list[str],
                preprocessing: dict[str, Any], name: str = "sequential") -> bytes:
    meta = {"format_version": FORMAT_VERSION, "name": name, "spec": spec.to_dict(),
            "class_names": list(class_names), "preprocessing": preprocessing}
    state = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    meta["sha256"] = tensor_digest(state)
    meta["metadata_sha256"] = metadata_digest(meta)
    return st_save(state, metadata={"cnnlab": json.dumps(meta)})


def model_preprocessing(input_shape: Any, data: str | None = None, resize_to: int | None = None) -> dict[str, Any]:
    """What predict and the web do to a new image so that it looks like the training data: the one rule,
    whichever front end saved the model. `data` is the training set's name when known (None: arrays from
    Python, a .keras file); only a known digit set centres digits as MNIST's were. `resize_to`: the short side
    photos were resized to before their centre crop (a folder read with a backbone's crop)."""
    if not (isinstance(input_shape, (tuple, list)) and len(input_shape) == 3):  # several inputs: pixels only
        return {"scale": 255}
    h, w, c = (int(v) for v in input_shape)
    return {"scale": 255, "size": [h, w], "channels": c, "color": "grayscale" if c == 1 else "rgb",
            "mnist_style": data in MNIST_STYLE_DATA, **({"resize_to": int(resize_to)} if resize_to else {})}


def metadata_digest(meta: dict[str, Any]) -> str:
    """SHA-256 of the whole metadata (class names, preprocessing, spec, name, the tensors' digest) as canonical
    JSON: a class-name list swapped by hand would flip every answer silently, so it is covered like the weights."""
    body = {k: v for k, v in meta.items() if k != "metadata_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def save_model(path: str | os.PathLike, spec: AnySpec, module: torch.nn.Module, class_names: list[str],
               preprocessing: dict[str, Any], name: str = "sequential") -> Path:
    """Write one `.safetensors` file atomically (a crash leaves the old file or the new one). `preprocessing`
    overrides or adds to what `model_preprocessing` gives for the spec's input (unknown data)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"model files end in .safetensors, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    recorded = {**model_preprocessing(spec.input_shape), **preprocessing}
    atomic_write_bytes(path, model_bytes(spec, module, class_names, recorded, name))
    return path


def model_path(path: str | os.PathLike) -> Path:
    """A model file, or the model file inside a run folder."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise ModelFileError(f"no model at {str(path)!r}: expected a run folder (runs/NAME) or a .safetensors file")
    return path


MAX_JSON_BYTES = 16 << 20  # a model's metadata (spec, class names) or a Keras config.json: 800 layers are ~1 MB
MAX_JSON_VALUES = 2_000_000  # objects, arrays and values: json.loads needs ~50 bytes each, so ~100 MB at most


def check_json_size(text: str | bytes, where: str, what: str) -> None:
    """Refuse JSON text before json.loads allocates for it: 21 million empty objects would take 1.8 GB and 13 s."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if len(raw) > MAX_JSON_BYTES:
        raise ModelFileError(f"{where}: {what} is {len(raw):,} bytes of JSON, more than the {MAX_JSON_BYTES:,} "
                             "cnnlab reads")
    values = raw.count(b",") + raw.count(b"{") + raw.count(b"[")
    if values > MAX_JSON_VALUES:
        raise ModelFileError(f"{where}: {what} holds about {values:,} JSON values, more than the "
                             f"{MAX_JSON_VALUES:,} cnnlab reads")


def read_model(path: str | os.PathLike) -> SavedModel:
    path = model_path(path)
    state, metadata = read_safetensors(path.read_bytes(), str(path))
    meta_text = metadata.get("cnnlab")
    if meta_text is None:
        raise ModelFileError(f"{path}: a safetensors file without cnnlab metadata (spec and class names)")
    check_json_size(meta_text, str(path), "the cnnlab metadata")
    try:
        meta = json.loads(meta_text)
        _check_version(meta, path)
        _check_metadata_digest(meta, path)
        spec = spec_from_dict(meta["spec"])
        outputs = summary_dict(spec)["output_shapes"]
        class_names = meta["class_names"]
        preprocessing = meta.get("preprocessing") or {}
        if not isinstance(class_names, list) or not all(isinstance(c, str) for c in class_names):
            raise ModelFileError(f"{path}: class_names must be a list of strings, got {class_names!r:.80}")
        if len(outputs) == 1 and len(outputs[0]) == 1 and len(class_names) != class_count(spec):
            raise ModelFileError(f"{path}: {len(class_names)} class names for a model of {class_count(spec)} classes "
                                 f"({outputs[0][-1]} outputs)")
        check_preprocessing(preprocessing, spec, str(path))
    except SpecError as exc:
        raise ModelFileError(f"{path}: the model spec in the file's metadata is not valid (damaged or edited): "
                             f"{exc}") from None
    except KeyError as exc:
        raise ModelFileError(f"{path}: the file's cnnlab metadata has no {exc.args[0]!r} entry: it is damaged or "
                             "was not written by cnnlab") from None
    except (json.JSONDecodeError, TypeError, AttributeError, RecursionError) as exc:
        raise ModelFileError(f"{path}: the file's cnnlab metadata is damaged ({type(exc).__name__}: {exc})") from None
    _check_sizes(path, spec, state)
    check_tensors(state, meta.get("sha256"), str(path))
    check_memory(spec, 1, False, f"the model {path}")  # predict and export run at least one image
    return SavedModel(spec, state, class_names, preprocessing, str(meta.get("name", "sequential")))


def _check_version(meta: Any, path: Path) -> None:
    if not isinstance(meta, dict):
        raise ModelFileError(f"{path}: the cnnlab metadata must be a JSON object, got {type(meta).__name__}")
    version = meta.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        what = "no format_version" if version is None else f"format_version {version!r} ({type(version).__name__})"
        raise ModelFileError(f"{path}: the metadata has {what}; this cnnlab reads model files whose format_version "
                             f"is the number {FORMAT_VERSION}: the file is damaged, edited, or from another version")


def _check_metadata_digest(meta: dict[str, Any], path: Path) -> None:
    """Files written since the metadata digest exists carry one: any change to the metadata is refused. Older files
    have only the tensors' digest; they load, their metadata unverified (README: Safety and limits)."""
    expected = meta.get("metadata_sha256")
    if expected is not None and metadata_digest(meta) != expected:
        raise ModelFileError(f"{path}: the metadata (class names, preprocessing, spec) does not match the file's "
                             "SHA-256: the file is damaged or was edited")


MAX_RESIZE = 8192  # pixels: the short side an image may be resized to before the centre crop


def check_preprocessing(preprocessing: Any, spec: AnySpec, where: str) -> None:
    """The preprocessing recipe must be an object whose numbers are in range (a resize_to of 1e9 would ask for
    terabytes per image, a list would fail deep in Pillow)."""
    if not isinstance(preprocessing, dict):
        raise ModelFileError(f"{where}: preprocessing must be an object, got {preprocessing!r:.80}")
    resize_to = preprocessing.get("resize_to")
    if resize_to is None:
        return
    side = max(spec.input_shape[:2]) if spec.input_shape and len(spec.input_shape) == 3 else 1
    if (not isinstance(resize_to, int) or isinstance(resize_to, bool)
            or not side <= resize_to <= min(MAX_RESIZE, 4 * side)):
        raise ModelFileError(f"{where}: preprocessing resize_to must be a whole number of pixels from the input side "
                             f"{side} to {min(MAX_RESIZE, 4 * side)}, got {resize_to!r:.40}")


def _check_sizes(path: Path, spec: AnySpec, state: dict[str, torch.Tensor]) -> None:
    """The spec must ask for exactly the parameters the file holds, so that building the module
    allocates no more than the file justifies (a tampered spec could ask for billions)."""
    wanted = summary_dict(spec)["total_params"]
    held = sum(t.numel() for k, t in state.items() if not k.endswith("num_batches_tracked"))
    if wanted != held:
        raise ModelFileError(f"{path}: the spec needs {wanted:,} parameters but the file holds {held:,}")


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ModelFileError(f"missing {path}") from None
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: not valid JSON ({exc})") from None


def history_csv(history: dict[str, list[float]]) -> str:
    keys = list(history)
    out = _io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["epoch", *keys])
    for i in range(len(history[keys[0]]) if keys else 0):
        writer.writerow([i + 1, *(f"{history[k][i]:.6g}" for k in keys)])
    return out.getvalue()
