"""MNIST handwritten digits, Keras-style: `(x_train, y_train), (x_test, y_test) = load_data()`."""
from __future__ import annotations

import numpy as np

from cnnlab.datasets import registry


def load_data() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """uint8 images (60000, 28, 28) / (10000, 28, 28) and uint8 labels, exactly as Keras returns them."""
    ds = registry.load("mnist")
    return (ds.x_train[..., 0], ds.y_train.astype(np.uint8)), (ds.x_test[..., 0], ds.y_test.astype(np.uint8))
