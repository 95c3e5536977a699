"""ImageNet input and output for the backbones: photo -> input tensor, logits -> named classes.

EfficientNet-Lite expects RGB scaled as ``(x - 127) / 128`` from 0..255 (not ImageNet mean/std), from
a bicubic resize of the short side to ``size + 32`` and a centre crop of ``size``: 256 -> 224 for Lite0,
272 -> 240 for Lite1, 292 -> 260 for Lite2, as the TensorFlow reference evaluates them.
"""
from __future__ import annotations

import functools
import importlib.resources
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

CROP_PADDING = 32  # the TF EfficientNet evaluation crop: size of (size + 32), so 224 of 256 (0.875), 260 of 292
MEAN, SCALE = 127.0, 128.0  # (x - MEAN) / SCALE; both exact in float, so any order gives equal bits


def resize_and_crop(image: Image.Image | np.ndarray, size: int = 224, resize_to: int | None = None) -> Image.Image:
    """RGB PIL image: the short side bicubic-resized to ``resize_to``, then the centre ``size`` crop.

    ``resize_to`` defaults to ``size + 32`` (256 for 224, 272 for 240, 292 for 260).
    ``image``: a PIL image (any mode) or a uint8 array (H, W, 3), (H, W, 4) or (H, W).
    """
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
            raise ValueError(f"expected a uint8 array (H, W), (H, W, 3) or (H, W, 4), "
                             f"got {image.dtype} {image.shape}")
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image or a uint8 numpy array, got {type(image).__name__}")
    resize_to = size + CROP_PADDING if resize_to is None else resize_to
    if resize_to < size:
        raise ValueError(f"resize_to must be at least the crop size {size}, got {resize_to}")
    image = image.convert("RGB")
    w, h = image.size
    scale = resize_to / min(w, h)
    new_w, new_h = max(resize_to, round(w * scale)), max(resize_to, round(h * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = round((new_w - size) / 2), round((new_h - size) / 2)
    return image.crop((left, top, left + size, top + size))


def preprocess_image(image: Image.Image | np.ndarray, size: int = 224, resize_to: int | None = None) -> torch.Tensor:
    """(3, size, size) float32 tensor ready for the backbone (add the batch axis with ``[None]``)."""
    pixels = np.asarray(resize_and_crop(image, size, resize_to))  # (size, size, 3) uint8
    return scale_batch(torch.from_numpy(pixels.copy())[None])[0].contiguous()


def scale_batch(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (N, H, W, 3) on any device -> (N, 3, H, W) ``dtype`` scaled as the backbone expects.

    The result is a channels_last tensor (NHWC in memory), the fast layout for the convolutions;
    call ``.contiguous()`` for a plain NCHW one.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected a uint8 tensor (N, H, W, 3), got {images.dtype} {tuple(images.shape)}")
    x = images.permute(0, 3, 1, 2).to(dtype)  # (N, 3, H, W), strides stay NHWC
    return x.sub_(MEAN).div_(SCALE)


def from_unit(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) pixels / 255 (cnnlab's model input) -> the backbone's (pixel - MEAN) / SCALE."""
    return (x * 255.0 - MEAN) / SCALE


class Prediction(NamedTuple):
    """One decoded class, like Keras's ``decode_predictions`` tuples: (WordNet id, name, score)."""

    wnid: str
    name: str
    score: float

    @property
    def index(self) -> int:
        """The class index 0..999."""
        return _wnid_index()[self.wnid]


@functools.lru_cache(maxsize=1)
def _class_table() -> tuple[tuple[str, str, str], ...]:
    """(wnid, short name, WordNet synonyms) per class, from the bundled imagenet_classes.tsv."""
    text = importlib.resources.files("cnnlab.backbones").joinpath("imagenet_classes.tsv").read_text("utf-8")
    rows = tuple(tuple(line.split("\t")) for line in text.splitlines() if line and not line.startswith("#"))
    if len(rows) != 1000 or any(len(r) != 3 for r in rows):
        raise RuntimeError(f"imagenet_classes.tsv is damaged: expected 1000 rows of 3 columns, got {len(rows)}")
    return rows


@functools.lru_cache(maxsize=1)
def _wnid_index() -> dict[str, int]:
    return {row[0]: i for i, row in enumerate(_class_table())}


def class_names(wordnet: bool = False) -> list[str]:
    """The 1000 ImageNet class names in index order (``class_names()[934] == "hot dog"``).

    ``wordnet=True`` gives the original synonym lists instead (``"hotdog, hot dog, red hot"``).
    """
    return [row[2] if wordnet else row[1] for row in _class_table()]


def class_wnids() -> list[str]:
    """The 1000 WordNet ids in index order (``"n07697537"`` is class 934)."""
    return [row[0] for row in _class_table()]


def decode_predictions(probs: torch.Tensor | np.ndarray, top: int = 5) -> list[list[Prediction]]:
    """Per image, the ``top`` classes by score, best first: ``[[Prediction(wnid, name, score), ...], ...]``.

    ``probs``: (N, 1000) or (1000,) scores (probabilities or logits; the ranking is the same).
    A (1000,) input still gives a list with one entry per image, i.e. of length 1.
    """
    scores = torch.as_tensor(probs).detach().float().cpu()
    if scores.ndim == 1:
        scores = scores[None]
    if scores.ndim != 2 or scores.shape[1] != 1000:
        raise ValueError(f"expected scores of shape (N, 1000), got {tuple(scores.shape)}")
    if not 1 <= top <= 1000:
        raise ValueError(f"top must be between 1 and 1000, got {top}")
    table = _class_table()
    values, indices = scores.topk(top, dim=1)  # (N, top)
    return [[Prediction(table[i][0], table[i][1], float(v)) for v, i in zip(vs.tolist(), ix.tolist())]
            for vs, ix in zip(values, indices)]
