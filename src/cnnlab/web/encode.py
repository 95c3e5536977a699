"""Arrays -> small PNG data URLs for the page: model inputs, test images, and response maps as tiled mosaics."""
from __future__ import annotations

import base64
import io
import math

import numpy as np
from matplotlib import colormaps
from PIL import Image

# The colour map plots.feature_maps_grid uses, as a lookup table: drawing by matplotlib is too slow
# for a page that updates while the pen moves.
VIRIDIS = (colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)  # (256, 3)
GAP = 1  # pixels between tiles


def png_data_url(image: np.ndarray) -> str:
    """uint8 (H, W), (H, W, 1) or (H, W, 3) -> 'data:image/png;base64,...'."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.dtype != np.uint8:
        raise ValueError(f"png_data_url takes uint8 pixels, got {arr.dtype}")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)  # tiny images: speed beats size
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def mosaic(fmap: np.ndarray, cols: int = 8) -> tuple[np.ndarray, int, int]:
    """(H, W, C) response map -> (RGB uint8 tiles in a grid, rows, cols); each channel scaled to its own range."""
    fmap = np.asarray(fmap, dtype=np.float32)
    h, w, c = fmap.shape
    cols = max(1, min(cols, c))
    rows = math.ceil(c / cols)
    low = fmap.min(axis=(0, 1), keepdims=True)
    span = fmap.max(axis=(0, 1), keepdims=True) - low
    # A flat channel (all zeros after ReLU is common) is drawn dark, not as noise stretched to full range.
    scaled = np.where(span > 0, (fmap - low) / np.where(span > 0, span, 1), 0)
    idx = (scaled * 255).round().astype(np.uint8)  # (H, W, C)
    out = np.full((rows * (h + GAP) - GAP, cols * (w + GAP) - GAP, 3), 255, dtype=np.uint8)
    for ch in range(c):
        r, q = divmod(ch, cols)
        out[r * (h + GAP):r * (h + GAP) + h, q * (w + GAP):q * (w + GAP) + w] = VIRIDIS[idx[:, :, ch]]
    return out, rows, cols
