"""Pretrained classifiers usable wherever a run is: `cnnlab predict imagenet photo.jpg` needs no training.

`pretrained_model("imagenet")` is EfficientNet-Lite0 with its ImageNet top, as a one-layer cnnlab spec (so
`runs.predict.class_probabilities` and `top_k` take it like a trained run), the 1000 class names, and the
backbone's own preprocessing: short side to 256 (bicubic), centre crop 224. `imagenet-lite1` and
`imagenet-lite2` are the larger variants at their own sizes (272 -> 240, 292 -> 260); their weights
packages are cnnlab dependencies too. `cnnlab.runs.open_model` opens these names as it opens model files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from cnnlab.backbones.efficientnet_lite import get_variant
from cnnlab.backbones.preprocess import CROP_PADDING, class_names
from cnnlab.spec import layers as L
from cnnlab.spec.build import new_module, place

# names a run argument may take instead of a run folder -> the backbone behind it
PRETRAINED: dict[str, type[L.EfficientNetLiteBase]] = {
    "imagenet": L.EfficientNetLite0,  # the default: its weights package is a cnnlab dependency
    **{f"imagenet-{get_variant(kind.keras_name).name}": kind for kind in L.BACKBONE_TYPES},
}


@dataclass
class PretrainedModel:
    """A pretrained classifier with the attributes `runs.predict` and the CLI read from a loaded model."""
    name: str
    spec: L.ModelSpec
    module: torch.nn.Module
    class_names: list[str]
    preprocessing: dict[str, Any]  # what `datasets.image_files.to_model_input` does to a photo: the evaluation crop

    @property
    def size(self) -> int:
        """The side the network was trained at (224, 240, 260)."""
        return int(self.spec.input_shape[0])


def is_pretrained_name(name: str | os.PathLike) -> bool:
    """Whether a run argument names a pretrained classifier (a real path by that name wins)."""
    return str(name) in PRETRAINED and not os.path.exists(name)


def pretrained_spec(name: str) -> L.ModelSpec:
    if name not in PRETRAINED:
        raise ValueError(f"unknown pretrained model {name!r}, expected one of {', '.join(PRETRAINED)}")
    layer = PRETRAINED[name](weights="imagenet", include_top=True, activation="softmax")
    size = get_variant(layer.variant).resolution
    return L.ModelSpec((layer,), (size, size, 3))


def pretrained_model(name: str) -> PretrainedModel:
    spec = pretrained_spec(name)
    module = place(new_module(spec), torch.device("cpu")).eval()  # the ImageNet weights, top included
    size = int(spec.input_shape[0])
    preprocessing = {"scale": 255, "size": [size, size], "channels": 3, "color": "rgb", "resize_to": size + CROP_PADDING}
    return PretrainedModel(name, spec, module, class_names(), preprocessing)


def describe_pretrained(name: str) -> dict[str, Any]:
    """A pretrained classifier as a row of a run listing (the keys `runs.run_folder.describe_run` gives)."""
    from cnnlab.spec.summary import summary_dict
    spec = pretrained_spec(name)
    return {"name": name, "model": f"{spec.layers[0].type} (pretrained)", "data": "ImageNet (1000 classes)",
            "params": summary_dict(spec)["total_params"]}
