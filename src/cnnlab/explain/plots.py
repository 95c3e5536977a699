"""Matplotlib figures from arrays (samples, training curves, confusion, kernels, maps, Grad-CAM, conv windows).

Every function builds a `matplotlib.figure.Figure` directly, never through pyplot, so nothing global
changes (no backend switch, no open-figure registry) and figures can be made from threads and servers.
`save_png` writes one to disk atomically. Images are channels-last: uint8 (H, W) / (H, W, C) in 0..255
or float in [0, 1].
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from cnnlab.explain.maps import TopLosses
from cnnlab.fsutil import atomic_path
from cnnlab.spec.conv_arithmetic import conv_windows, explain, pool_windows


def save_png(fig: Figure, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write `fig` as PNG atomically, so a reader (the web page, an image viewer) never sees half
    a file. Pixel size = inches * dpi."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            fig.savefig(f, format="png", dpi=dpi)
            f.flush()
            os.fsync(f.fileno())
    return path


MAX_GRID = 400


def sample_grid(
    images: np.ndarray,
    labels: Sequence[int],
    class_names: Sequence[str],
    rows: int = 4,
    cols: int = 8,
    title: str = "Sample images",
) -> Figure:
    """The first rows*cols images with their class names."""
    if rows * cols > MAX_GRID:  # one matplotlib axis per tile: thousands take minutes and gigabytes
        raise ValueError(f"a grid of {rows}x{cols} = {rows * cols:,} images is too large: at most {MAX_GRID} images")
    images = np.asarray(images)
    n = min(rows * cols, len(images))
    fig, axes = _tiles(n, cols, tile=1.3, title=f"{title}  ({n} of {len(images)})")
    for i, ax in enumerate(axes):
        _show(ax, images[i])
        ax.set_title(f"{class_names[int(labels[i])]}", fontsize=9)
    return fig


def training_curves(history: dict[str, Sequence[float]], title: str = "Training history",
                    steps: Sequence[Sequence[float]] | None = None) -> Figure:
    """Loss and accuracy per epoch, training and validation ('loss', 'val_loss', 'accuracy', ...).

    `steps` ([epochs done, loss, accuracy] rows, the epoch's running means; history.json's "steps") adds the
    training curve within each epoch: with one epoch it is the only curve there is."""
    panels = [m for m in ("loss", "accuracy") if m in history or f"val_{m}" in history]
    if not panels:
        raise ValueError(f"history needs 'loss' or 'accuracy' lists, got keys {sorted(history)}")
    points = np.asarray(steps, dtype=float).reshape(-1, 3) if steps else np.zeros((0, 3))
    fig = Figure(figsize=(5.2 * len(panels), 4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, metric in zip(axes, panels):
        if len(points):
            column = points[:, 1 if metric == "loss" else 2]
            epoch_of = np.ceil(points[:, 0] - 1e-9).astype(int)  # x in (e, e + 1]: within epoch e + 1
            for e in np.unique(epoch_of):  # one line an epoch: the running means restart with each
                mask = epoch_of == e
                ax.plot(points[mask, 0], column[mask], "-", color="tab:blue", alpha=0.5,
                        label="training, running mean within the epoch" if e == epoch_of[0] else None)
        for key, style, label in ((metric, "o-", "training"), (f"val_{metric}", "s--", "validation")):
            values = history.get(key)
            if values:
                epochs = np.arange(1, len(values) + 1)
                ax.plot(epochs, values, style, markersize=4, label=f"{label} (last {values[-1]:.4f})")
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.xaxis.set_major_locator(MaxNLocator(integer=not len(points)))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return fig


def confusion(cm: np.ndarray, class_names: Sequence[str], normalize: bool = False) -> Figure:
    """Confusion matrix, rows = true class, columns = predicted; counts or row fractions (recall on the diagonal)."""
    cm = np.asarray(cm)
    k = len(class_names)
    if cm.shape != (k, k):
        raise ValueError(f"cm must be ({k}, {k}) for {k} class names, got {cm.shape}")
    total = int(cm.sum())
    acc = np.trace(cm) / total if total else 0.0
    if normalize:
        rows = cm.sum(axis=1, keepdims=True)
        shown = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
        what, fmt, vmax = "row-normalised: each true class sums to 1", "{:.2f}", 1.0
    else:
        shown, what, fmt, vmax = cm, "counts", "{:d}", max(int(cm.max()), 1)

    side = max(4.5, 0.55 * k + 2)
    fig = Figure(figsize=(side + 1, side), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=vmax)
    fig.colorbar(im, ax=ax, shrink=0.8)
    if k <= 30:
        size = 9 if k <= 12 else 6
        for (i, j), v in np.ndenumerate(shown):
            text = fmt.format(float(v) if normalize else int(v))
            ax.text(j, i, text, ha="center", va="center", fontsize=size,
                    color="white" if v > 0.5 * vmax else "black")
    slant = max(len(str(c)) for c in class_names) > 3
    ax.set_xticks(range(k), [str(c) for c in class_names], rotation=45 if slant else 0,
                  ha="right" if slant else "center")
    ax.set_yticks(range(k), [str(c) for c in class_names])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Confusion matrix ({what})\naccuracy {acc:.2%} of {total} images")
    return fig


def top_losses_grid(
    images: np.ndarray, top: TopLosses, class_names: Sequence[str], cols: int = 4
) -> Figure:
    """The examples `top_losses` picked, each titled prediction / truth / probability / loss."""
    images = np.asarray(images)
    if len(top) == 0:
        fig = Figure(figsize=(5, 2))
        fig.text(0.5, 0.5, "No misclassified examples", ha="center", va="center", fontsize=13)
        return fig
    fig, axes = _tiles(len(top), cols, tile=2.0, title="Top losses: the most confidently wrong predictions\n"
                       "predicted (true), probability of the prediction, loss, #index")
    for ax, i, t, p, prob, loss in zip(axes, top.index, top.y_true, top.y_pred, top.prob, top.loss):
        _show(ax, images[int(i)])
        ax.set_title(f"{class_names[int(p)]} (true {class_names[int(t)]})\np {prob:.2f}  loss {loss:.2f}  #{int(i)}",
                     fontsize=9, color="firebrick")
    return fig


def filters_grid(kernels: np.ndarray, layer_name: str, in_channel: int | None = None) -> Figure:
    """One tile per filter of a (kh, kw, in_ch, out_ch) kernel array, on one shared colour scale.

    With several input channels a tile shows `in_channel`, or when None the mean over input channels
    (three-channel kernels are shown as RGB, each scaled to its own range).
    """
    kernels = np.asarray(kernels, dtype=np.float32)
    if kernels.ndim != 4:
        raise ValueError(f"kernels must be (kh, kw, in_ch, out_ch), got shape {kernels.shape}")
    kh, kw, n_in, n_out = kernels.shape
    rgb = in_channel is None and n_in == 3
    if in_channel is not None:
        if not 0 <= in_channel < n_in:
            raise ValueError(f"in_channel must be in 0..{n_in - 1}, got {in_channel}")
        tiles, note = kernels[:, :, in_channel, :], f"input channel {in_channel}"
    elif n_in == 1 or rgb:
        tiles, note = kernels[:, :, 0, :], "RGB" if rgb else "weights"
    else:
        tiles, note = kernels.mean(axis=2), f"mean over {n_in} input channels"

    cols = min(8, n_out)
    fig, axes = _tiles(n_out, cols, tile=1.1, title=f"{layer_name}: {n_out} learned {kh}x{kw} kernels ({note})",
                       right=0.86)
    lim = float(np.abs(tiles).max()) or 1.0
    for o, ax in enumerate(axes):
        if rgb:
            k = kernels[:, :, :, o]
            ax.imshow((k - k.min()) / (np.ptp(k) or 1.0))
        else:
            im = ax.imshow(tiles[:, :, o], cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(str(o), fontsize=8)
    if not rgb:
        cax = fig.add_axes((0.89, 0.15, 0.025, 0.65))
        fig.colorbar(im, cax=cax, label="weight (red > 0 > blue)")
    return fig


def feature_maps_grid(
    name: str, fmap: np.ndarray, output_shape: Sequence[int | None] | None = None, max_maps: int = 64
) -> Figure:
    """The channels of one (H, W, C) response map as tiles, titled like the summary: 'conv2d  (None, 26, 26, 32)'."""
    fmap = np.asarray(fmap)
    if fmap.ndim != 3:
        raise ValueError(f"a response map must be (H, W, C), got shape {fmap.shape}")
    h, w, c = fmap.shape
    shape = tuple(output_shape) if output_shape is not None else (None, h, w, c)
    n = min(c, max_maps)
    shown = f"all {c} channels" if n == c else f"first {n} of {c} channels"
    fig, axes = _tiles(n, min(8, n), tile=1.3,
                       title=f"{name}  {_shape(shape)}\n{shown}; each scaled to its own range (bright = strong)")
    for ch, ax in enumerate(axes):
        ax.imshow(fmap[:, :, ch], cmap="viridis", interpolation="nearest")
        ax.set_title(f"{ch}: max {float(fmap[:, :, ch].max()):.2g}", fontsize=7)
    return fig


def grad_cam_overlay(
    image: np.ndarray, heatmap: np.ndarray, title: str = "Grad-CAM", alpha: float = 0.45,
    saliency: np.ndarray | None = None,
) -> Figure:
    """Image, heat map (H, W) in [0, 1], the heat map laid over the image, and the saliency (H, W) when given."""
    image, heatmap = np.asarray(image), np.asarray(heatmap)
    if heatmap.shape != image.shape[:2]:
        raise ValueError(f"heatmap shape {heatmap.shape} must equal the image's (H, W) {image.shape[:2]}")
    if saliency is not None and np.shape(saliency) != image.shape[:2]:
        raise ValueError(f"saliency shape {np.shape(saliency)} must equal the image's (H, W) {image.shape[:2]}")
    fig = Figure(figsize=(10 if saliency is None else 13, 3.8), layout="constrained")
    axes = fig.subplots(1, 3 if saliency is None else 4)
    ax_img, ax_map, ax_mix = axes[:3]
    _show(ax_img, image)
    ax_img.set_title("image")
    im = ax_map.imshow(heatmap, cmap="jet", vmin=0, vmax=1)
    ax_map.set_title("Grad-CAM heat map")
    _show(ax_mix, image)
    ax_mix.imshow(heatmap, cmap="jet", vmin=0, vmax=1, alpha=alpha)
    ax_mix.set_title("Grad-CAM overlay")
    for ax in axes[1:]:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=[ax_map, ax_mix], shrink=0.8, label="importance for the class")
    if saliency is not None:
        sal = np.asarray(saliency, dtype=float)
        ax_sal = axes[3]
        si = ax_sal.imshow(sal, cmap="hot", vmin=0, vmax=max(float(sal.max()), 1e-12))
        ax_sal.set_title("saliency |d logit / d pixel|")
        fig.colorbar(si, ax=ax_sal, shrink=0.8)
    fig.suptitle(title)
    return fig


def conv_explainer(
    input_size: int | tuple[int, int],
    kernel: int | tuple[int, int],
    padding: str = "valid",
    stride: int | tuple[int, int] | None = None,
    pool: bool = False,
) -> Figure:
    """Input grid (with the zero-padding ring for 'same'), every window numbered at its centre, the
    first two windows outlined, and the output grid with the same numbers; the arithmetic as caption.

    `pool=True` draws a pooling window instead; stride None means 1 for a convolution and the
    pool size for pooling, as in Keras.
    """
    if pool:
        w = pool_windows(input_size, kernel, padding, stride)
    else:
        w = conv_windows(input_size, kernel, padding, 1 if stride is None else stride)
    (top, bottom), (left, right) = w.pad
    h_in, w_in = w.input_size
    kh, kw = w.kernel
    oh, ow = w.output_size
    rows, cols = h_in + top + bottom, w_in + left + right
    cell = max(0.22, min(0.6, 6.0 / max(rows, cols)))  # inches per cell
    digits = len(str(w.count))
    font = max(4.0, min(11.0, cell * 72 * 0.75 / max(digits, 2)))

    fig = Figure(figsize=(max(7.0, cell * (cols + ow) + 2.5), cell * max(rows, oh) + 2.6), layout="constrained")
    ax_in, ax_out = fig.subplots(1, 2, width_ratios=[cols, ow])
    for r in range(-top, h_in + bottom):
        for c in range(-left, w_in + right):
            inside = 0 <= r < h_in and 0 <= c < w_in
            ax_in.add_patch(Rectangle((c, r), 1, 1, facecolor="white" if inside else "0.85",
                                      edgecolor="0.6", hatch=None if inside else "//", linewidth=0.5))
    for i, (r, c) in enumerate(w.positions):
        ax_in.text(c + kw / 2, r + kh / 2, str(i), ha="center", va="center", fontsize=font, color="navy")
    for i, (colour, style) in enumerate((("crimson", "-"), ("darkorange", "--"))):
        if i < w.count:
            r, c = w.positions[i]
            ax_in.add_patch(Rectangle((c, r), kw, kh, fill=False, edgecolor=colour, linestyle=style, linewidth=2.5))
    _grid_axes(ax_in, -left, w_in + right, -top, h_in + bottom)
    pad_note = f", grey = {'zero ' if not pool else ''}padding ({top}/{bottom} rows, {left}/{right} cols)" if padding == "same" else ""
    ax_in.set_title(f"input {h_in}x{w_in}{pad_note}\nnumber = centre of window; red: first window, orange: second",
                    fontsize=9)

    for i in range(w.count):
        r, c = divmod(i, ow)
        ax_out.add_patch(Rectangle((c, r), 1, 1, facecolor="aliceblue", edgecolor="0.6", linewidth=0.5))
        ax_out.text(c + 0.5, r + 0.5, str(i), ha="center", va="center", fontsize=font, color="navy")
    _grid_axes(ax_out, 0, ow, 0, oh)
    ax_out.set_title(f"output {oh}x{ow}: one value per window", fontsize=9)

    text = explain(w).splitlines()
    fig.suptitle(text[0])
    fig.supxlabel("\n".join(line.strip() for line in text[1:]), fontsize=9, family="monospace")
    return fig


# --- helpers ---------------------------------------------------------------------------------


def _tiles(n: int, cols: int, tile: float, title: str, right: float = 0.98) -> tuple[Figure, list]:
    """A figure with n small image axes in rows of `cols`; unused grid cells are removed."""
    cols = max(1, min(cols, n))
    rows = max(1, math.ceil(n / cols))
    head = 0.35 + 0.25 * (title.count("\n") + 1)  # inches for the title
    fig = Figure(figsize=(cols * tile / (right - 0.02), rows * tile + head))
    grid = fig.subplots(rows, cols, squeeze=False)
    fig.subplots_adjust(left=0.02, right=right, bottom=0.02, top=1 - head / (rows * tile + head),
                        wspace=0.15, hspace=0.5)
    axes = list(grid.ravel())
    for ax in axes[n:]:
        ax.remove()
    for ax in axes[:n]:
        ax.set_xticks([])
        ax.set_yticks([])
    _widen_for(fig, fig.suptitle(title, fontsize=11))
    return fig, axes[:n]


def _widen_for(fig: Figure, text) -> None:
    """Widen `fig` so a centred `text` (a title over a few narrow tiles) is not cut at both sides."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    renderer = FigureCanvasAgg(fig).get_renderer()
    need = text.get_window_extent(renderer).width / fig.dpi + 0.3  # inches, with a margin each side
    if need > fig.get_figwidth():
        fig.set_figwidth(need)


def _show(ax, img: np.ndarray) -> None:
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    top = 255 if img.dtype == np.uint8 else 1.0
    if img.ndim == 2:
        ax.imshow(img, cmap="gray", vmin=0, vmax=top, interpolation="nearest")
    else:
        ax.imshow(img if img.dtype == np.uint8 else np.clip(img, 0, 1), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _grid_axes(ax, x0: int, x1: int, y0: int, y1: int) -> None:
    ax.set_xlim(x0, x1)
    ax.set_ylim(y1, y0)  # row 0 at the top, as in an image
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)


def _shape(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("None" if s is None else str(s) for s in shape) + ")"
