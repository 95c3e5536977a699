"""Keras's `image_dataset_from_directory`: a class-per-subfolder tree as a batched dataset, decoded once by cnnlab.

The files are listed, shuffled and split as Keras does (classes are the sorted subfolders; with `shuffle`
the file list is shuffled by `numpy.random.RandomState(seed)`; `validation_split` takes the *last*
fraction for "validation"), so the same seed puts the same files in each subset as Keras. Decoding is
cnnlab's folder loader (`cnnlab.datasets.folders.load`): the same parallel decoder, the same cache, and
unreadable files are skipped (Keras would fail on them) and listed in `dataset.bad_files`.

The dataset holds the uint8 images whole (`dataset.images`, (N, H, W, C)), so `model.fit(dataset)` trains
on the fast device-resident path; iterating it gives Keras's batches (float32 0-255 images, labels).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from cnnlab.datasets.folders import cache as folder_cache
from cnnlab.datasets.folders.load import _check_size, _decode_into, _plan_size
from cnnlab.datasets.folders.scan import BadFile, scan

LABEL_MODES = ("int", "categorical", "binary", None)
COLOR_MODES = ("rgb", "grayscale")
SUBSETS = ("training", "validation", "both")


@dataclass(frozen=True)
class ImageDataset:
    """Batched images and labels, as Keras's dataset of (images, labels) batches; `images` are uint8."""
    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray | None  # int (N,), one-hot float32 (N, K), float32 (N, 1) for "binary", None
    class_names: list[str]
    batch_size: int
    file_paths: list[str]
    label_mode: str | None = "int"
    shuffle: bool = True
    seed: int | None = None
    bad_files: tuple[BadFile, ...] = field(default=(), compare=False)

    def __len__(self) -> int:
        """Batches per pass, as `len(dataset)` (cardinality) in Keras."""
        return math.ceil(len(self.images) / self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        order = (np.random.default_rng(self.seed).permutation(len(self.images)) if self.shuffle
                 else np.arange(len(self.images)))
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            x = self.images[idx].astype(np.float32)
            yield x if self.labels is None else (x, self.labels[idx])

    def int_labels(self) -> np.ndarray:
        """Integer class indices (N,) whatever the label mode; what cnnlab's fit takes."""
        if self.labels is None:
            raise ValueError("this dataset has no labels (label_mode=None): it can be predicted, not trained on")
        y = self.labels
        return (y.argmax(1) if y.ndim == 2 and y.shape[1] > 1 else y.reshape(len(y))).astype(np.int64)


def image_dataset_from_directory(directory: str | os.PathLike, labels: str | None = "inferred",
                                 label_mode: str | None = "int", class_names: list[str] | None = None,
                                 color_mode: str = "rgb", batch_size: int | None = 32,
                                 image_size: tuple[int, int] = (256, 256), shuffle: bool = True,
                                 seed: int | None = None, validation_split: float | None = None,
                                 subset: str | None = None, interpolation: str = "bilinear",
                                 follow_links: bool = False, crop_to_aspect_ratio: bool = False,
                                 verbose: bool = True) -> ImageDataset | list[ImageDataset]:
    """A dataset of the images in `directory` (one subfolder per class), as keras.utils.image_dataset_from_directory.

    Example:
        train, val = image_dataset_from_directory("pets", image_size=(180, 180), batch_size=32,
                                                  validation_split=0.2, subset="both", seed=1337)
    """
    _check_options(labels, label_mode, color_mode, interpolation, crop_to_aspect_ratio, validation_split, subset,
                   shuffle, seed)
    size = _check_size(image_size)
    layout = scan(directory, follow_links=follow_links)
    if layout.split_folders:
        raise ValueError(f"{layout.root} has split folders ({', '.join(layout.split_folders.values())}); "
                         "pass one of them, e.g. image_dataset_from_directory('<folder>/train')")
    names = list(layout.class_names)
    if class_names is not None:
        if sorted(class_names) != sorted(names):
            raise ValueError(f"class_names {class_names!r} must name the subfolders of {layout.root}: {names}")
        names = list(class_names)
    if label_mode == "binary" and len(names) != 2:
        raise ValueError(f"label_mode 'binary' needs exactly 2 classes, found {len(names)}: {', '.join(names)}")
    files = layout.files()
    index = [names.index(layout.class_names[label]) for _, label, _ in files]
    x, bad = _decode(layout, files, size, color_mode)

    order = np.arange(len(files))
    if shuffle:  # Keras shuffles the file list and the label list with two generators of the same seed
        seed_used = seed if seed is not None else np.random.randint(1e6)
        order = order.copy()
        np.random.RandomState(seed_used).shuffle(order)
    parts = {"training": order, "validation": order[:0]}
    if validation_split:
        n_val = int(validation_split * len(order))
        parts = {"training": order[:-n_val] if n_val else order, "validation": order[len(order) - n_val:]}
    wanted = ["training", "validation"] if subset == "both" else [subset or "training"]
    if verbose:
        print(f"Found {len(files)} files belonging to {len(names)} classes.")
        if validation_split:
            for part in wanted:
                print(f"Using {len(parts[part])} files for {part}.")
    y_all = np.array(index, dtype=np.int64)
    bad_files = tuple(BadFile(layout.rel(files[i][2]), r) for i, r in sorted(bad.items()))
    out = [_subset(x, y_all, [i for i in parts[p] if i not in bad], files, names, label_mode, batch_size, shuffle,
                   seed, bad_files) for p in wanted]
    return out if subset == "both" else out[0]


def _check_options(labels: str | None, label_mode: str | None, color_mode: str, interpolation: str,
                   crop_to_aspect_ratio: bool, validation_split: float | None, subset: str | None, shuffle: bool,
                   seed: int | None) -> None:
    """Keras's argument checks, before any file is read."""
    if labels not in ("inferred", None):
        raise ValueError(f"labels must be 'inferred' or None (explicit label lists are not supported), got {labels!r}")
    if label_mode not in LABEL_MODES or (labels is None and label_mode is not None):
        raise ValueError(f"label_mode must be 'int', 'categorical', 'binary' or None (None when labels=None), "
                         f"got {label_mode!r}")
    if color_mode not in COLOR_MODES:
        raise ValueError(f"color_mode must be 'rgb' or 'grayscale', got {color_mode!r}")
    if interpolation != "bilinear" or crop_to_aspect_ratio:
        raise ValueError("cnnlab resizes with bilinear interpolation and no cropping; "
                         f"got interpolation={interpolation!r}, crop_to_aspect_ratio={crop_to_aspect_ratio!r}")
    if validation_split is not None and not 0 < validation_split < 1:
        raise ValueError(f"validation_split must be between 0 and 1, got {validation_split!r}")
    if (validation_split is None) != (subset is None) or (subset is not None and subset not in SUBSETS):
        raise ValueError(f"give validation_split and subset ('training', 'validation' or 'both') together, "
                         f"got validation_split={validation_split!r}, subset={subset!r}")
    if validation_split and shuffle and seed is None:
        raise ValueError("with validation_split and shuffle=True a seed is needed, so both subsets split the same "
                         "files (as Keras asks); give seed=123")


def _decode(layout: Any, files: list[Any], size: tuple[int, int], color: str) -> tuple[np.ndarray, dict[int, str]]:
    """Every file decoded into uint8 rows (file order), through the folder loader's cache; bad rows by index."""
    options = {"image_size": size, "color": color}
    cache_file = folder_cache.cache_file(layout, files, options)
    loaded = folder_cache.read_cache(cache_file)
    if loaded is None:
        image_size, note = _plan_size(files, size, None)
        x = np.zeros((len(files), *image_size, 1 if color == "grayscale" else 3), dtype=np.uint8)
        meta = _decode_into(x, files, image_size, color, note, None, None)
        folder_cache.write_cache(cache_file, x, meta)
        loaded = (x, meta)
    x, meta = loaded
    return x, {int(i): reason for i, reason in meta["bad"].items()}


def _subset(x: np.ndarray, y: np.ndarray, rows: list[int], files: list[Any], names: list[str],
            label_mode: str | None, batch_size: int | None, shuffle: bool, seed: int | None,
            bad_files: tuple[BadFile, ...]) -> ImageDataset:
    rows_a = np.array(rows, dtype=np.int64)
    labels: np.ndarray | None = y[rows_a]
    if label_mode == "categorical":
        labels = np.eye(len(names), dtype=np.float32)[labels]
    elif label_mode == "binary":
        labels = labels.astype(np.float32)[:, None]
    elif label_mode is None:
        labels = None
    return ImageDataset(np.ascontiguousarray(x[rows_a]), labels, names, batch_size or len(rows_a) or 1,
                        [str(files[i][2]) for i in rows], label_mode, shuffle, seed, bad_files)
