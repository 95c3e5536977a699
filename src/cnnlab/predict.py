"""Read image files and turn them into the input a trained model expects (size, colour, scale)."""
from __future__ import annotations

import os
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 50_000_000  # refuse decompression bombs well before they exhaust memory


def open_image(path: str | os.PathLike) -> Image.Image:
    """Decode an image file with EXIF orientation applied; clear errors for missing or bad files."""
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_PIXELS:
                raise ValueError(f"{path}: {img.width}x{img.height} pixels is over the {MAX_PIXELS:,}-pixel limit")
            img.seek(0)  # first frame of a GIF
            return ImageOps.exif_transpose(img).copy()
    except FileNotFoundError:
        raise FileNotFoundError(f"image {str(path)!r} not found") from None
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from None


def to_model_input(img: Image.Image, input_shape: tuple[int, ...], preprocessing: dict[str, Any] | None = None) -> np.ndarray:
    """uint8 (H, W, C) of the model's input size and channels; transparency is put on white."""
    h, w, c = input_shape
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    img = img.convert("L" if c == 1 else "RGB")
    if (preprocessing or {}).get("mnist_style") and c == 1:
        from cnnlab.digits import mnist_style
        return mnist_style(np.asarray(img), (h, w))[..., None]
    img = img.resize((w, h), Image.Resampling.BILINEAR) if img.size != (w, h) else img
    arr = np.asarray(img, dtype=np.uint8)
    return arr[..., None] if c == 1 else arr


def load_image_for(path: str | os.PathLike, input_shape: tuple[int, ...], preprocessing: dict[str, Any] | None = None) -> np.ndarray:
    return to_model_input(open_image(path), input_shape, preprocessing)
