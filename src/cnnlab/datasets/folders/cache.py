"""The decoded-image cache of an image folder: one .npz per folder and options, keyed by every file's
path, size and mtime, so a second run starts at once and a changed file is decoded again."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.datasets.download import cache_dir
from cnnlab.datasets.folders.scan import Layout
from cnnlab.fsutil import atomic_path

CACHE_VERSION = 2  # 2: JPEGs decoded at a reduced scale where the model input allows


def cache_file(layout: Layout, files: list[tuple[str, int, Path]], options: dict[str, Any]) -> Path:
    key = hashlib.sha256(json.dumps({"version": CACHE_VERSION, "root": str(layout.root), "options": options,
                                     "classes": layout.class_names}, sort_keys=True).encode())
    for split, label, path in files:
        try:
            st = path.stat()
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        key.update(f"{split}\0{label}\0{layout.rel(path)}\0{stamp}\n".encode())
    # One entry per folder and options: a new entry replaces the one for the same prefix (see write_cache).
    prefix = hashlib.sha256(json.dumps([str(layout.root), options], sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir() / "folders" / f"{layout.root.name[:40]}-{prefix}-{key.hexdigest()[:16]}.npz"


def read_cache(path: Path) -> tuple[np.ndarray, dict[str, Any]] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["x"], json.loads(str(z["meta"]))
    except (OSError, ValueError, KeyError, json.JSONDecodeError):  # missing or damaged: decode again
        return None


def write_cache(path: Path, x: np.ndarray, meta: dict[str, Any]) -> None:
    """Atomic write; the older entry for the same folder and options is removed, so the cache stays bounded."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, x=x, meta=np.array(json.dumps(meta)))
        prefix = path.name.rsplit("-", 1)[0] + "-"
        for old in path.parent.glob(f"{prefix}*.npz"):
            if old != path:
                old.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only or full cache only costs the next run a fresh decode
