"""Small Keras-compatible helpers for array data."""
from __future__ import annotations

import numpy as np

from cnnlab.datasets.directory import image_dataset_from_directory

__all__ = ["image_dataset_from_directory", "to_categorical"]


def to_categorical(y: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """Integer labels (N,) -> one-hot float32 (N, num_classes), as keras.utils.to_categorical."""
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"to_categorical expects integer labels of shape (N,), got {y.dtype} {y.shape}")
    n = int(y.max()) + 1 if num_classes is None else num_classes
    if len(y) and (y.min() < 0 or y.max() >= n):
        raise ValueError(f"labels must be in [0, {n}), got values from {y.min()} to {y.max()}")
    return np.eye(n, dtype=np.float32)[y]
