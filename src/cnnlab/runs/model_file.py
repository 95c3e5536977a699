"""Model files and run folders: safetensors weights with the spec, class names and preprocessing beside them.

Nothing is ever pickled or unpickled: a model file from a stranger is tensors plus JSON.
"""
from __future__ import annotations

import csv
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


def read_model(path: str | os.PathLike) -> SavedModel:
    path = model_path(path)
    state, metadata = read_safetensors(path.read_bytes(), str(path))
    meta_text = metadata.get("cnnlab")
    if meta_text is None:
        raise ModelFileError(f"{path}: a safetensors file without cnnlab metadata (spec and class names)")
    try:
        meta = json.loads(meta_text)
        if meta.get("format_version") != FORMAT_VERSION:
            raise ModelFileError(f"{path}: model format version {meta.get('format_version')!r}, "
                                 f"this cnnlab reads version {FORMAT_VERSION}")
        spec = spec_from_dict(meta["spec"])
        outputs = summary_dict(spec)["output_shapes"]
        class_names = meta["class_names"]
        preprocessing = meta.get("preprocessing") or {}
        if not isinstance(class_names, list) or not all(isinstance(c, str) for c in class_names):
            raise ModelFileError(f"{path}: class_names must be a list of strings, got {class_names!r:.80}")
        if len(outputs) == 1 and len(outputs[0]) == 1 and len(class_names) != class_count(spec):
            raise ModelFileError(f"{path}: {len(class_names)} class names for a model of {class_count(spec)} classes "
                                 f"({outputs[0][-1]} outputs)")
        if not isinstance(preprocessing, dict):
            raise ModelFileError(f"{path}: preprocessing must be an object, got {preprocessing!r:.80}")
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError, SpecError, RecursionError) as exc:
        raise ModelFileError(f"{path}: damaged cnnlab metadata ({type(exc).__name__}: {exc})") from None
    _check_sizes(path, spec, state)
    check_tensors(state, meta.get("sha256"), str(path))
    check_memory(spec, 1, False, f"the model {path}")  # predict and export run at least one image
    return SavedModel(spec, state, class_names, preprocessing, str(meta.get("name", "sequential")))


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
