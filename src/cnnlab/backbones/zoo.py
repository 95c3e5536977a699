"""Pretrained classifiers usable wherever a run is: `cnnlab predict imagenet photo.jpg` needs no training.

`zoo_model("imagenet")` is EfficientNet-Lite0 with its ImageNet top, as a one-layer cnnlab spec (so
`runs.predict.class_probabilities` and `top_k` take it like a trained run), the 1000 class names, and the
backbone's own preprocessing: short side to 256 (bicubic), centre crop 224. `load_run` is the one rule
for what a run argument names (`cnnlab predict RUN`, `cnnlab serve RUN`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from cnnlab.backbones.preprocess import class_names
from cnnlab.spec import layers as L
from cnnlab.spec.build import new_module, place

if TYPE_CHECKING:
    from cnnlab.functional import Model

ZOO_RUNS = ("imagenet",)  # names a run argument may take instead of a run folder
SIZE, RESIZE_TO = 224, 256
# What `datasets.image_files.to_model_input` does to a photo for this model: the backbone's evaluation crop.
PREPROCESSING = {"scale": 255, "size": [SIZE, SIZE], "channels": 3, "color": "rgb", "resize_to": RESIZE_TO}


@dataclass
class ZooModel:
    """A pretrained classifier: `module` takes cnnlab's input (float [0, 1], (N, 3, 224, 224)) and gives logits."""
    name: str
    spec: L.ModelSpec
    module: torch.nn.Module
    class_names: list[str]
    preprocessing: dict[str, Any] = field(default_factory=lambda: dict(PREPROCESSING))


def is_zoo_name(name: str | os.PathLike) -> bool:
    """A built-in name that is not also a path on disk (a run folder called "imagenet" wins)."""
    return str(name) in ZOO_RUNS and not os.path.exists(name)


def zoo_spec(name: str) -> L.ModelSpec:
    if name not in ZOO_RUNS:
        raise ValueError(f"unknown pretrained model {name!r}, expected one of {', '.join(ZOO_RUNS)}")
    return L.ModelSpec((L.EfficientNetLite0(weights="imagenet", include_top=True, activation="softmax"),),
                       (SIZE, SIZE, 3))


def zoo_model(name: str) -> ZooModel:
    spec = zoo_spec(name)
    module = place(new_module(spec), torch.device("cpu")).eval()  # the ImageNet weights, top included
    return ZooModel(name, spec, module, class_names())


def describe_zoo(name: str) -> dict[str, Any]:
    """A pretrained classifier as a row of a run listing (the keys `runs.run_folder.describe_run` gives)."""
    from cnnlab.spec.summary import summary_dict
    return {"name": name, "model": "EfficientNet-Lite0 (pretrained)", "data": "ImageNet (1000 classes)",
            "params": summary_dict(zoo_spec(name))["total_params"]}


def load_run(run: str | os.PathLike) -> ZooModel | Model:
    """What a run argument names: a pretrained classifier (`imagenet`), else a run folder or model file."""
    if is_zoo_name(run):
        return zoo_model(str(run))
    from cnnlab.models import load_model
    return load_model(run)
