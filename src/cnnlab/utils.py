"""Small Keras-compatible helpers: labels (to_categorical), image files (load_img, img_to_array), folder datasets."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from cnnlab.datasets.directory import image_dataset_from_directory
from cnnlab.datasets.image_files import open_image, to_model_input

__all__ = ["image_dataset_from_directory", "img_to_array", "load_img", "to_categorical"]


def load_img(path: str | os.PathLike, color_mode: str = "rgb", target_size: tuple[int, int] | None = None,
             interpolation: str = "bilinear") -> Image.Image:
    """An image file as a PIL image (EXIF-rotated, 8-bit), as keras.utils.load_img, via cnnlab's one decoder."""
    if color_mode not in ("rgb", "grayscale"):
        raise ValueError(f"color_mode must be 'rgb' or 'grayscale', got {color_mode!r}")
    if interpolation != "bilinear":
        raise ValueError(f"cnnlab resizes with bilinear interpolation, got {interpolation!r}")
    img = open_image(path)
    size = target_size or (img.height, img.width)
    arr = to_model_input(img, (*size, 1 if color_mode == "grayscale" else 3))
    return Image.fromarray(arr[..., 0] if color_mode == "grayscale" else arr)


def img_to_array(img: Image.Image) -> np.ndarray:
    """A PIL image as float32 (H, W, C) 0-255, as keras.utils.img_to_array."""
    arr = np.asarray(img, dtype=np.float32)
    return arr[..., None] if arr.ndim == 2 else arr


def to_categorical(y: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """Integer labels (N,) -> one-hot float32 (N, num_classes), as keras.utils.to_categorical."""
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"to_categorical expects integer labels of shape (N,), got {y.dtype} {y.shape}")
    n = int(y.max()) + 1 if num_classes is None else num_classes
    if len(y) and (y.min() < 0 or y.max() >= n):
        raise ValueError(f"labels must be in [0, {n}), got values from {y.min()} to {y.max()}")
    return np.eye(n, dtype=np.float32)[y]
