"""Fashion-MNIST (Zalando), Keras-style; found in Debian's package, the cache or a folder you name."""
from __future__ import annotations

import os

import numpy as np

from cnnlab.datasets import registry


def load_data(data_dir: str | os.PathLike | None = None
              ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """uint8 images (60000, 28, 28) / (10000, 28, 28) and uint8 labels, as Keras returns them."""
    ds = registry.load("fashion_mnist", data_dir)
    return (ds.x_train[..., 0], ds.y_train.astype(np.uint8)), (ds.x_test[..., 0], ds.y_test.astype(np.uint8))
