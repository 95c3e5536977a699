"""One way in: whatever a user names as a model becomes one `OpenedModel`, built by the one spec builder.

A model argument is a run folder, a `.safetensors` file (from `cnnlab train`, `model.save` or the web), a
`.keras` file, or a pretrained name (`imagenet`, `imagenet-lite1`, ...; a real path by that name wins).
Every command (summary, evaluate, predict, explain, plot, export, serve), the web and `load_model` open
models here, so a model behaves the same whichever front end made it or reads it, and a bad argument gets
the same one-line error everywhere.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cnnlab.runs import model_file
from cnnlab.runs.keras_file import load_keras
from cnnlab.runs.pretrained import PRETRAINED, is_pretrained_name, pretrained_model
from cnnlab.spec.build import build, class_count, place
from cnnlab.spec.graph import AnySpec


@dataclass
class OpenedModel:
    """A model as every front end uses it: spec, weights, class names and how its inputs are prepared."""
    spec: AnySpec
    state: dict[str, torch.Tensor]
    class_names: list[str]
    preprocessing: dict[str, Any]
    name: str = "sequential"  # the model's own name (Keras's `model.name`)
    path: Path | None = None  # the file or folder it came from; None for a pretrained name
    pretrained: str | None = None  # `imagenet`, ... when it is a pretrained classifier
    _module: torch.nn.Module | None = field(default=None, repr=False)

    @property
    def module(self) -> torch.nn.Module:
        """The torch module (logits; see `cnnlab.spec.build`), weights loaded, on the CPU in eval mode."""
        if self._module is None:
            module = build(self.spec)
            try:
                module.load_state_dict(self.state, strict=True)
            except RuntimeError as exc:
                first = str(exc).splitlines()[0]
                raise model_file.ModelFileError(f"the weights do not fit the model's spec: {first}") from None
            self._module = place(module, torch.device("cpu")).eval()
        return self._module

    @property
    def run_folder(self) -> Path | None:
        """The run folder it belongs to (a run folder, or the model file inside one); None otherwise."""
        if self.path is None:
            return None
        folder = self.path if self.path.is_dir() else self.path.parent
        return folder if (folder / "config.json").is_file() else None

    @property
    def is_keras_file(self) -> bool:
        return self.path is not None and self.path.suffix == ".keras" and self.path.is_file()


def not_a_model(name: str | os.PathLike) -> model_file.ModelFileError:
    """The one error for a model argument that names nothing cnnlab can open."""
    return model_file.ModelFileError(
        f"no model at {str(name)!r}: expected a run folder (runs/NAME), a .safetensors or .keras file, "
        f"or a pretrained name ({', '.join(PRETRAINED)})")


def names_a_model(text: str | os.PathLike) -> bool:
    """Whether a `--model` argument names a model to open rather than a spec to build (a zoo name such as
    `seed`, a JSON file, a compact spec): a pretrained name, a folder, or a `.safetensors`/`.keras` path."""
    return is_pretrained_name(text) or Path(text).suffix in (".safetensors", ".keras") or Path(text).is_dir()


def open_model(name: str | os.PathLike) -> OpenedModel:
    """Open a run folder, `.safetensors` file, `.keras` file or pretrained name (see the module docstring)."""
    if is_pretrained_name(name):
        zoo = pretrained_model(str(name))
        opened = OpenedModel(zoo.spec, zoo.module.state_dict(), zoo.class_names, zoo.preprocessing,
                             name=zoo.name, pretrained=zoo.name)
        opened._module = zoo.module
        return opened
    path = Path(name)
    if not path.exists():
        raise not_a_model(name)
    if path.suffix == ".keras" and path.is_file():
        keras = load_keras(path)
        names = keras.class_names or [str(i) for i in range(class_count(keras.spec))]
        return OpenedModel(keras.spec, keras.state, names, model_file.model_preprocessing(keras.spec.input_shape),
                           name=keras.name, path=path)
    saved = model_file.read_model(path)
    preprocessing = {**model_file.model_preprocessing(saved.spec.input_shape), **saved.preprocessing}
    return OpenedModel(saved.spec, saved.state, saved.class_names, preprocessing, name=saved.name, path=path)
