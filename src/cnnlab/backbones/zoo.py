"""Pretrained classifiers usable wherever a run is: `cnnlab predict imagenet photo.jpg` needs no training.

`zoo_model("imagenet")` is EfficientNet-Lite0 with its ImageNet top, as a one-layer cnnlab spec (so
`runs.predict.class_probabilities` and `top_k` take it like a trained run), the 1000 class names, and the
backbone's own preprocessing: short side to 256 (bicubic), centre crop 224. `imagenet-lite1` and
`imagenet-lite2` are the larger variants at their own sizes (272 -> 240, 292 -> 260); they need
`pip install 'cnnlab[backbones]'`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from cnnlab.backbones.efficientnet_lite import get_variant
from cnnlab.backbones.preprocess import class_names, resize_and_crop
from cnnlab.datasets.image_files import open_image
from cnnlab.spec import layers as L
from cnnlab.spec.build import new_module, place

# names a run argument may take instead of a run folder -> the backbone behind it
ZOO_RUNS: dict[str, type[L.EfficientNetLiteBase]] = {
    "imagenet": L.EfficientNetLite0,  # the default: its weights package is a cnnlab dependency
    **{f"imagenet-{get_variant(kind.keras_name).name}": kind for kind in L.BACKBONE_TYPES},
}


@dataclass
class ZooModel:
    """A pretrained classifier: `module` takes cnnlab's input (float [0, 1], (N, 3, size, size)) and gives logits."""
    name: str
    spec: L.ModelSpec
    module: torch.nn.Module
    class_names: list[str]
    size: int  # the side the network was trained at (224, 240, 260)

    def image(self, path: str | os.PathLike) -> np.ndarray:
        """An image file as the uint8 (size, size, 3) the network sees (EXIF-rotated, RGB, resized, cropped)."""
        return np.asarray(resize_and_crop(open_image(path).convert("RGB"), self.size))


def is_zoo_name(name: str | os.PathLike) -> bool:
    """A built-in name that is not also a path on disk (a run folder called "imagenet" wins)."""
    return str(name) in ZOO_RUNS and not os.path.exists(name)


def zoo_model(name: str) -> ZooModel:
    if name not in ZOO_RUNS:
        raise ValueError(f"unknown pretrained model {name!r}, expected one of {', '.join(ZOO_RUNS)}")
    layer = ZOO_RUNS[name](weights="imagenet", include_top=True, activation="softmax")
    size = get_variant(layer.variant).resolution
    spec = L.ModelSpec((layer,), (size, size, 3))
    module = place(new_module(spec), torch.device("cpu")).eval()  # the ImageNet weights, top included
    return ZooModel(name, spec, module, class_names(), size)
