"""Make a user's digit picture look like an MNIST digit: light ink on black, 20x20 box, centred by mass.

MNIST's recipe (LeCun et al.): size-normalise each digit to fit a 20x20 box keeping its aspect ratio,
then place it in 28x28 so that its centre of mass is at the centre. Photos and canvas drawings are
dark ink on light paper, so they are inverted first; the paper's level and noise (measured on the
border) are subtracted, lone specks do not move the crop, and thin pen strokes are widened towards
MNIST's stroke width so a phone photo of a biro digit looks like the digits the model learned. A picture
already in that form (an MNIST image itself) is returned unchanged: it is what the model was tested on.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter


def mnist_style(gray: np.ndarray, size: tuple[int, int] = (28, 28), box: int | None = None) -> np.ndarray:
    """uint8 (H, W) grayscale of any size -> uint8 `size` array in MNIST's style."""
    g = np.asarray(gray, dtype=np.float32)
    if g.ndim != 2:
        raise ValueError(f"mnist_style takes a 2-D grayscale image, got shape {g.shape}")
    h, w = size
    box = box or round(min(h, w) * 20 / 28)
    if in_mnist_form(gray, size, box):  # an MNIST image itself: exactly what the model was trained and tested on
        return np.array(gray, dtype=np.uint8)
    border = _border(g)
    paper = _median(border)
    if paper > 127:  # light background: dark ink on paper
        g, border, paper = 255.0 - g, 255.0 - border, 255.0 - paper
    mad = _median(np.abs(border - paper))
    # Paper, grain and sensor noise become black: 4 robust standard deviations above the paper's level.
    g = np.clip(g - (paper + 4 * 1.4826 * mad), 0, None)
    if g.max() <= 0:
        return np.zeros(size, dtype=np.uint8)
    top, bottom, left, right = _ink_box(g)
    g = g[top:bottom, left:right]
    g = np.clip(g * (255.0 / g.max()), 0, 255)
    g = _thicken(g, box)
    scale = box / max(g.shape)
    new = (max(1, round(g.shape[1] * scale)), max(1, round(g.shape[0] * scale)))  # PIL takes (w, h)
    digit = np.asarray(Image.fromarray(g.astype(np.uint8)).resize(new, Image.Resampling.LANCZOS), dtype=np.float32)
    if digit.max() > 0:  # thin pen strokes fade when shrunk a lot; MNIST strokes peak at full white
        digit *= 255.0 / digit.max()
    out = np.zeros(size, dtype=np.float32)
    total = digit.sum()
    if total <= 0:  # ink too sparse to survive the shrink (a few dots far apart): nothing to centre
        return out.astype(np.uint8)
    cy, cx = ((np.arange(digit.shape[0]) @ digit.sum(1)) / total, (np.arange(digit.shape[1]) @ digit.sum(0)) / total)
    top, left = int(round(h / 2 - cy)), int(round(w / 2 - cx))  # MNIST's centre of mass sits at index 14.0
    top, left = min(max(top, 0), h - digit.shape[0]), min(max(left, 0), w - digit.shape[1])
    out[top:top + digit.shape[0], left:left + digit.shape[1]] = digit
    return np.clip(out, 0, 255).astype(np.uint8)


def in_mnist_form(gray: np.ndarray, size: tuple[int, int], box: int) -> bool:
    """Whether `gray` already is what the recipe makes: `size`, black border, peak 255, ink box `box` on its
    long side, strokes not thin, centre of mass within half a pixel of the centre (89% of MNIST's test digits)."""
    g = np.asarray(gray)
    if g.shape != tuple(size) or g.dtype != np.uint8 or g.max() != 255:
        return False
    if g[0].any() or g[-1].any() or g[:, 0].any() or g[:, -1].any():
        return False
    rows, cols = np.flatnonzero(g.any(1)), np.flatnonzero(g.any(0))
    if max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 != box or _stroke_width(g) < 0.45 * MNIST_STROKE * box:
        return False
    total = float(g.sum(dtype=np.int64))
    cy, cx = (np.arange(size[0]) @ g.sum(1)) / total, (np.arange(size[1]) @ g.sum(0)) / total
    return abs(cy - size[0] / 2) <= 0.5 and abs(cx - size[1] / 2) <= 0.5


MNIST_STROKE = 2.85 / 20  # median stroke width of MNIST digits (by `_stroke_width`) over the 20-pixel box


def _thicken(g: np.ndarray, box: int) -> np.ndarray:
    """Widen thin strokes (a pen on a phone photo) towards MNIST's stroke width relative to the digit's size.

    Works on a copy at most 4 boxes tall, so the dilation stays small and cheap for large photos.
    """
    work = 4 * box
    if max(g.shape) > work:
        shrink = work / max(g.shape)
        new = (max(1, round(g.shape[1] * shrink)), max(1, round(g.shape[0] * shrink)))
        g = np.asarray(Image.fromarray(g.astype(np.uint8)).resize(new, Image.Resampling.LANCZOS), dtype=np.float32)
        g = np.clip(g * (255.0 / max(g.max(), 1.0)), 0, 255)
    target = MNIST_STROKE * max(g.shape)
    width = _stroke_width(g)
    if width >= 0.45 * target:  # MNIST's own thinnest 5% are at 0.74: leave those alone
        return g
    k = 2 * round((target - width) / 2) + 1  # a k x k maximum filter widens a stroke by k - 1 pixels
    return np.asarray(Image.fromarray(g.astype(np.uint8)).filter(ImageFilter.MaxFilter(k)), dtype=np.float32)


def _stroke_width(g: np.ndarray) -> float:
    """Mean stroke width of the ink above half intensity: a stroke of width t and length L has area tL and
    about 2L boundary pixels, so t = 2 * area / boundary."""
    ink = g > 127
    p = np.zeros((ink.shape[0] + 2, ink.shape[1] + 2), dtype=bool)  # np.pad costs 20x more on a 28x28 digit
    p[1:-1, 1:-1] = ink
    inner = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return 2.0 * ink.sum() / max(int((ink & ~inner).sum()), 1)


def _ink_box(g: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the ink, found on a blurred copy so lone specks of noise do not count."""
    radius = max(1, round(min(g.shape) / 100))
    blurred = np.asarray(Image.fromarray(np.clip(g, 0, 255).astype(np.uint8)).filter(ImageFilter.BoxBlur(radius)),
                         dtype=np.float32)
    ink = blurred > 0.25 * blurred.max() if blurred.max() > 0 else g > 0
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    pad = 2 * radius  # the blur and its threshold trim faint stroke ends by about the radius
    top, bottom = max(rows[0] - pad, 0), min(rows[-1] + 1 + pad, g.shape[0])
    left, right = max(cols[0] - pad, 0), min(cols[-1] + 1 + pad, g.shape[1])
    inside = g[top:bottom, left:right]
    ink = inside > 0.1 * inside.max()  # tighten to the sharp ink within the coarse box
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    return top + rows[0], top + rows[-1] + 1, left + cols[0], left + cols[-1] + 1


def _median(a: np.ndarray) -> np.floating:
    """np.median of a 1-D array, for the ~100 border pixels of a digit at a tenth of np.median's overhead."""
    s = np.sort(a)
    return (s[(s.size - 1) // 2] + s[s.size // 2]) / 2


def _border(g: np.ndarray) -> np.ndarray:
    return np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
