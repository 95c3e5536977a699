"""Write a dataset's arrays as image files in the folder layout that `cnnlab train --data DIR` reads."""
from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cnnlab.datasets.dataset import Dataset
from cnnlab.fsutil import atomic_dir

FORMATS = {"png": ("PNG", {}), "bmp": ("BMP", {}), "webp": ("WEBP", {"lossless": True}),
           "jpeg": ("JPEG", {"quality": 95})}  # all but JPEG keep every pixel exactly
LAYOUTS = ("splits", "classes")


@dataclass(frozen=True)
class ExportSummary:
    out: Path
    counts: dict[str, int]  # split folder ("train", "test", or "" for the class layout) -> files written
    folder_names: tuple[str, ...]  # one per class, in class order


def folder_names(class_names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Class names made safe as folder names ("T-shirt/top" -> "T-shirt_top"), kept unique and in order."""
    out: list[str] = []
    for name in class_names:
        safe = re.sub(r"[\\/:*?\"<>|\0]", "_", str(name)).strip().lstrip(".") or "class"
        candidate, k = safe, 2
        while candidate in out:
            candidate, k = f"{safe}_{k}", k + 1
        out.append(candidate)
    return tuple(out)


def export_images(data: Dataset, out: str | os.PathLike, fmt: str = "png", layout: str = "splits",
                  limit: int | None = None, overwrite: bool = False, workers: int = 4) -> ExportSummary:
    """Write `data` as out/train/<class>/<index>.<fmt> and out/test/... (layout "splits"), or train and
    test together as out/<class>/train-<index>.<fmt> (layout "classes"). `limit` keeps the first N of each split.

    File names carry the image's index in its split, so an exported image can be traced to its array row.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be {', '.join(FORMATS)}, got {fmt!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be {' or '.join(LAYOUTS)}, got {layout!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of images, got {limit}")
    pil_format, save_options = FORMATS[fmt]
    names = folder_names(data.class_names)
    jobs: list[tuple[np.ndarray, str]] = []  # (image (H, W, C), relative path)
    counts: dict[str, int] = {}
    for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        n = len(x) if limit is None else min(limit, len(x))
        counts[split if layout == "splits" else ""] = counts.get(split if layout == "splits" else "", 0) + n
        for i in range(n):
            folder = f"{split}/{names[int(y[i])]}" if layout == "splits" else names[int(y[i])]
            stem = f"{i:05d}" if layout == "splits" else f"{split}-{i:05d}"
            jobs.append((x[i], f"{folder}/{stem}.{fmt}"))

    def write(job: tuple[np.ndarray, str], root: Path) -> None:
        image, rel = job
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(root / rel, pil_format, **save_options)

    with atomic_dir(out, overwrite=overwrite) as tmp:
        for folder in {str(Path(rel).parent) for _, rel in jobs}:
            (tmp / folder).mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda job: write(job, tmp), jobs))
    return ExportSummary(Path(out), counts, names)
