"""The Dataset type: uint8 images (N, H, W, C), integer labels and class names, split into train/test (and val)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Dataset:
    """Images uint8 (N, H, W, C), labels int64 (N,), the class names and where the data came from."""
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    source: str
    x_val: np.ndarray | None = None  # validation images kept apart from training (an image folder's val/)
    y_val: np.ndarray | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def subset(self, n_train: int | None, n_test: int | None = None) -> "Dataset":
        """The first `n_train` training (and `n_test` test) images, for quick experiments; None keeps a split whole."""
        for what, n, have in (("training", n_train, len(self.x_train)), ("test", n_test, len(self.x_test))):
            if n is not None and not 1 <= n <= have:
                raise ValueError(f"subset must be between 1 and {have:,} {what} images, got {n}")
        return dataclasses.replace(self, x_train=self.x_train[:n_train], y_train=self.y_train[:n_train],
                                   x_test=self.x_test[:n_test], y_test=self.y_test[:n_test])
