"""Image folders too large for memory: decoded once into a disk-backed uint8 array (`numpy.memmap`).

The file lives in the cache folder next to the in-memory cache, under the same key (paths, sizes,
mtimes and options) plus the holdout and seed, because its rows are stored already split and shuffled:
train, then val (when there is one), then test. Each part is then a plain slice of one memmap, so
training reads a batch's rows without ever materialising the whole array, and the second run opens
the file at once. Memory stays bounded by the OS page cache: it keeps the recently read pages and
drops them under pressure, which is the bounded cache we want, for free.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
from numpy.lib.format import open_memmap

from cnnlab.fsutil import atomic_path

COPY_BYTES = 64 << 20  # rows copied per step while arranging: memory use stays near this, whatever the data size


def stream_file(cache_file: Path, holdout: float, seed: int) -> Path:
    """Where the streamed copy of the folder behind `cache_file` (an in-memory cache path) lives."""
    return cache_file.with_name(f"{cache_file.stem}~h{holdout:g}~s{seed}.npy")


def memory_need(n: int, size: tuple[int, int], channels: int) -> tuple[int, int | None]:
    """(bytes the decoded arrays need, bytes of memory free now or None when the OS does not say)."""
    need = n * size[0] * size[1] * channels
    try:
        return need, os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return need, None


def should_stream(n: int, size: tuple[int, int], channels: int) -> bool:
    """Stream when the arrays would take more than half the free memory: training needs room besides them."""
    need, free = memory_need(n, size, channels)
    return free is not None and need > free // 2


def open_rows(path: Path) -> np.memmap:
    return open_memmap(path, mode="r")


def read(path: Path) -> tuple[np.memmap, dict[str, Any]] | None:
    """(rows, meta) of a finished streamed cache; None when there is none or it is damaged."""
    try:
        meta = json.loads(path.with_suffix(".json").read_text())
        return open_rows(path), meta
    except (OSError, ValueError):
        return None


def write(path: Path, shape: tuple[int, int, int, int], decode: Callable[[np.ndarray], dict[str, Any]],
          parts_of: Callable[[dict[str, Any]], list[np.ndarray]]) -> dict[str, Any]:
    """Decode into a scratch memmap of `shape` (N, H, W, C) in file order, then copy its rows, part after
    part as `parts_of(meta)` lists them, into `path`, finished atomically. Returns decode's meta."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.scratch")
    try:
        raw = open_memmap(scratch, mode="w+", dtype=np.uint8, shape=shape)
        meta = decode(raw)
        rows = np.concatenate(parts_of(meta))
        channels = 1 if meta["color"] == "grayscale" else shape[3]  # "auto" decoded 3 channels of gray: keep one
        with atomic_path(path.with_suffix(".json")) as tmp:
            tmp.write_text(json.dumps(meta))
        with atomic_path(path) as tmp:
            out = open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(rows), *shape[1:3], channels))
            step = max(1, COPY_BYTES // max(1, int(np.prod(shape[1:]))))
            for a in range(0, len(rows), step):
                chunk = rows[a:a + step]
                order = np.argsort(chunk)  # read in file order (disk locality), write back in the shuffled order
                block = np.empty((len(chunk), *out.shape[1:]), np.uint8)
                block[order] = raw[chunk[order], ..., :channels]
                out[a:a + len(chunk)] = block
            out.flush()
            del out
        del raw
        _remove_older(path)
    finally:
        scratch.unlink(missing_ok=True)
    return meta


def _remove_older(path: Path) -> None:
    """Other streamed copies of the same folder and options are stale or for another split: keep one."""
    stem = path.name.rsplit("~", 2)[0]
    prefix = stem.rsplit("-", 1)[0] + "-"
    for old in path.parent.glob(f"{prefix}*~*"):
        if old.suffix in (".npy", ".json") and old.with_suffix(".npy") != path:
            old.unlink(missing_ok=True)
