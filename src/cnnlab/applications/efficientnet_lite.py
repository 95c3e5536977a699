"""`keras.applications`-style EfficientNet-Lite0: the pretrained backbone as a layer, its preprocessing and class names.

    from cnnlab.applications import EfficientNetLite0
    from cnnlab import layers, models
    base = EfficientNetLite0(weights="imagenet", include_top=False, input_shape=(224, 224, 3))  # (7, 7, 1280)
    model = models.Sequential([base, layers.GlobalAveragePooling2D(), layers.Dense(2, activation="softmax")])

The application is a Keras layer object (`cnnlab.layers.EfficientNetLite0` over the spec layer
`cnnlab.spec.layers.EfficientNetLite0`): it goes into `Sequential([...])`, is called on tensors in functional
models (`x = base(inputs)`), and `base.trainable = False` freezes it. Frozen unless asked, as in Keras's
transfer-learning guide. Models take
uint8-range images scaled to [0, 1] as every cnnlab model does; the layer converts to the network's own scaling,
so `preprocess_input` is only for feeding `cnnlab.backbones.EfficientNetLite` directly.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cnnlab import layers
from cnnlab.backbones.preprocess import Prediction, scale_batch
from cnnlab.backbones.preprocess import decode_predictions as _decode


def EfficientNetLite0(weights: str | None = "imagenet", include_top: bool = False,  # noqa: N802 - Keras's name
                      input_shape: tuple[int, int, int] | None = None, trainable: bool = False,
                      classifier_activation: str | None = "softmax", name: str | None = None
                      ) -> layers.EfficientNetLite0:
    """The pretrained EfficientNet-Lite0 layer: (H, W, 3) -> (ceil(H/32), ceil(W/32), 1280), or (1000,) with the top.

    `input_shape` defaults to (224, 224, 3), the size it was trained at.
    """
    return layers.EfficientNetLite0(weights=weights, include_top=include_top, trainable=trainable,
                                    activation=classifier_activation if include_top else None, name=name,
                                    input_shape=tuple(input_shape) if input_shape is not None else (224, 224, 3))


def preprocess_input(x: Any) -> torch.Tensor:
    """uint8 (N, H, W, 3) images (array or tensor) -> float (N, 3, H, W) scaled `(x - 127) / 128` for the raw network."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    return scale_batch(t.to(torch.uint8) if t.dtype != torch.uint8 else t)


def decode_predictions(preds: Any, top: int = 5) -> list[list[Prediction]]:
    """(N, 1000) probabilities -> for each row the `top` (wordnet id, name, probability), as Keras returns them."""
    return _decode(preds, top)
