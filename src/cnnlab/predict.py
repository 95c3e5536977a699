"""Read image files and turn them into the input a trained model expects (size, colour, scale)."""
from __future__ import annotations

import os
import struct
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 50_000_000  # refuse decompression bombs well before they exhaust memory
# No honest file holds more pixels per byte than this: flat lossless WebP reaches ~25,000, a blank
# 1-bit fax TIFF ~13,000. A header claiming more describes data the file does not have.
MAX_PIXELS_PER_BYTE = 100_000
# Pillow's format plugins report malformed data with any of these, not only OSError.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, struct.error,
                 ZeroDivisionError, OverflowError, Image.DecompressionBombError)


class ImageError(ValueError):
    """An image file cannot be decoded, or is too large to decode safely."""


def open_image(path: str | os.PathLike) -> Image.Image:
    """Decode an image file with EXIF orientation applied; clear errors for missing or bad files."""
    try:
        size = os.path.getsize(path)
        with Image.open(path) as img:
            pixels = img.width * img.height
            if pixels > MAX_PIXELS:
                raise ImageError(f"{path}: {img.width}x{img.height} pixels is over the {MAX_PIXELS:,}-pixel limit")
            if pixels > MAX_PIXELS_PER_BYTE * size:
                raise ImageError(f"{path}: its header claims {img.width}x{img.height} pixels, more than a {size:,}-byte "
                                 "file can hold; the file is damaged")
            img.seek(0)  # first frame of a GIF
            return ImageOps.exif_transpose(img).copy()
    except FileNotFoundError:
        raise FileNotFoundError(f"image {str(path)!r} not found") from None
    except ImageError:
        raise
    except (UnidentifiedImageError, *DECODE_ERRORS) as exc:
        raise ImageError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None


def to_model_input(img: Image.Image, input_shape: tuple[int, ...], preprocessing: dict[str, Any] | None = None) -> np.ndarray:
    """uint8 (H, W, C) of the model's input size and channels; transparency is put on white."""
    h, w, c = input_shape
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    try:
        img = img.convert("L" if c == 1 else "RGB")
    except ValueError:  # Pillow has no conversion for a few modes (LAB, La)
        raise ImageError(f"cannot use an image of mode {img.mode!r}; save it as RGB or grayscale") from None
    if (preprocessing or {}).get("mnist_style") and c == 1:
        from cnnlab.digits import mnist_style
        return mnist_style(np.asarray(img), (h, w))[..., None]
    img = img.resize((w, h), Image.Resampling.BILINEAR) if img.size != (w, h) else img
    arr = np.asarray(img, dtype=np.uint8)
    return arr[..., None] if c == 1 else arr


def load_image_for(path: str | os.PathLike, input_shape: tuple[int, ...], preprocessing: dict[str, Any] | None = None) -> np.ndarray:
    return to_model_input(open_image(path), input_shape, preprocessing)
