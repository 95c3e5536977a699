"""What a model says about images: class probabilities from its logits, and the top-k classes by name.

Every front end (CLI, web page, evaluation) asks here, so a model ending in logits (`Dense(10)` with no
softmax) shows the same probabilities everywhere. The torch module always returns logits (see
`cnnlab.spec.build`); `Sequential.predict` is the Keras-semantics exception and returns what the model's
last layer gives.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from cnnlab.train.device_data import eval_images
from cnnlab.train.fit import predict_logits


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """(N, classes) logits -> (N, classes) probabilities that sum to 1; a binary head's one logit (N, 1)
    gives the two classes' [1 - p, p]."""
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits.float())
        return torch.cat([1 - p, p], 1)
    return torch.softmax(logits.float(), 1)


def class_probabilities(module: torch.nn.Module, images: np.ndarray, batch_size: int = 2000) -> np.ndarray:
    """uint8 images (N, H, W, C) -> float32 probabilities (N, classes), in batches."""
    device = next(module.parameters()).device
    logits = predict_logits(module, eval_images(images, device), batch_size)
    if logits.ndim != 2:  # a model ending in a conv layer gives a feature map, not one score per class
        shape = "x".join(map(str, logits.shape[1:]))
        raise ValueError(f"this model outputs a {shape} feature map per image, not one score per class, so it has no "
                         "class probabilities; end it with e.g. GlobalAveragePooling2D and Dense(classes) to classify")
    return probabilities(logits).cpu().numpy()


def top_k(probs: np.ndarray, class_names: Sequence[str], k: int) -> list[list[dict[str, Any]]]:
    """For each row of `probs`, the `k` likeliest classes: [{"class", "index", "probability"}, ...]."""
    if k < 1:
        raise ValueError(f"top-k must be at least 1, got {k}")
    k = min(k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[{"class": class_names[i], "index": int(i), "probability": float(row[i])} for i in top]
            for row, top in zip(probs, order)]
