"""Make a user's digit picture look like an MNIST digit: light ink on black, 20x20 box, centred by mass.

MNIST's recipe (LeCun et al.): size-normalise each digit to fit a 20x20 box keeping its aspect ratio,
then place it in 28x28 so that its centre of mass is at the centre. Photos and canvas drawings are
dark ink on light paper, so they are inverted first.
"""
from __future__ import annotations

import numpy as np
from PIL import Image


def mnist_style(gray: np.ndarray, size: tuple[int, int] = (28, 28), box: int | None = None) -> np.ndarray:
    """uint8 (H, W) grayscale of any size -> uint8 `size` array in MNIST's style."""
    g = np.asarray(gray, dtype=np.float32)
    if g.ndim != 2:
        raise ValueError(f"mnist_style takes a 2-D grayscale image, got shape {g.shape}")
    if np.median(_border(g)) > 127:  # light background: dark ink on paper
        g = 255.0 - g
    g = np.clip(g - np.median(_border(g)), 0, None)  # paper grain and shadows become black
    if g.max() <= 0:
        return np.zeros(size, dtype=np.uint8)
    g = g * (255.0 / g.max())
    rows, cols = np.flatnonzero(g.max(1) > 25), np.flatnonzero(g.max(0) > 25)  # ink: above 10% of the peak
    g = g[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = size
    box = box or round(min(h, w) * 20 / 28)
    scale = box / max(g.shape)
    new = (max(1, round(g.shape[1] * scale)), max(1, round(g.shape[0] * scale)))  # PIL takes (w, h)
    digit = np.asarray(Image.fromarray(g.astype(np.uint8)).resize(new, Image.Resampling.LANCZOS), dtype=np.float32)
    out = np.zeros(size, dtype=np.float32)
    total = digit.sum()
    if total <= 0:  # ink too sparse to survive the shrink (a few dots far apart): nothing to centre
        return out.astype(np.uint8)
    cy, cx = ((np.arange(digit.shape[0]) @ digit.sum(1)) / total, (np.arange(digit.shape[1]) @ digit.sum(0)) / total)
    top, left = int(round(h / 2 - cy)), int(round(w / 2 - cx))
    top, left = min(max(top, 0), h - digit.shape[0]), min(max(left, 0), w - digit.shape[1])
    out[top:top + digit.shape[0], left:left + digit.shape[1]] = digit
    return np.clip(out, 0, 255).astype(np.uint8)


def _border(g: np.ndarray) -> np.ndarray:
    return np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
