"""Arrays -> small PNG data URLs for the page: model inputs, test images, response maps as tiled mosaics, heat maps."""
from __future__ import annotations

import base64
import io
import math
from typing import NamedTuple

import numpy as np
from matplotlib import colormaps
from PIL import Image

# The colour maps plots.feature_maps_grid and plots.grad_cam_overlay use, as lookup tables: drawing by
# matplotlib is too slow for a page that updates while the pen moves.
VIRIDIS = (colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)  # (256, 3)
JET = (colormaps["jet"](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)  # (256, 3)
GAP = 1  # pixels between tiles
# A mosaic stays under about 460 x 460 pixels: a photo model's first stages are 112 x 112 with 32
# channels and its last has 1280 channels, which drawn whole would be megabytes per request.
MAX_TILES = 64  # the first 64 channels, as plots.feature_maps_grid draws
MAX_TILE_SIDE = 56  # larger maps are averaged down by a whole factor (112 -> 56)


class Mosaic(NamedTuple):
    image: np.ndarray  # RGB uint8 (rows * (tile_h + GAP) - GAP, cols * (tile_w + GAP) - GAP, 3)
    rows: int
    cols: int
    channels: int  # how many channels it shows: the first ones, up to MAX_TILES
    tile: tuple[int, int]  # (tile_h, tile_w): the map's (H, W), or less where averaged down


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


def mosaic(fmap: np.ndarray, cols: int = 8) -> Mosaic:
    """(H, W, C) response map -> its channels as tiles in a grid; each channel scaled to its own range."""
    fmap = np.asarray(fmap, dtype=np.float32)[:, :, :MAX_TILES]
    step = math.ceil(max(fmap.shape[:2]) / MAX_TILE_SIDE)
    if step > 1:  # (H, W, C) -> (H / step, W / step, C), the mean of each step x step block
        h, w, c = fmap.shape
        fmap = fmap[:h - h % step, :w - w % step].reshape(h // step, step, w // step, step, c).mean(axis=(1, 3))
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
    return Mosaic(out, rows, cols, c, (h, w))


def heat_png(heat: np.ndarray) -> str:
    """A (H, W) heat map in [0, 1] (Grad-CAM's) -> a jet-coloured PNG data URL of the same size."""
    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"a heat map must be (H, W), got shape {heat.shape}")
    return png_data_url(JET[(np.clip(heat, 0, 1) * 255).round().astype(np.uint8)])
