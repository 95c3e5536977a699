"""A photo folder as a pretrained backbone sees it: read with the backbone's own crop, its pooled features computed
once (mirror images too, when asked) by the fast inference copy, and cached under a key of every option.

One rule for the pixels: `load_folder(..., resize_to=size + 32)`, the crop `predict`, the web page and exports apply
to a model whose preprocessing records `resize_to` (`cnnlab.datasets.image_files.to_model_input`), so the head is
fitted on exactly the photos the saved model will be shown.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from cnnlab.backbones.efficientnet_lite import VARIANTS, EfficientNetLite
from cnnlab.backbones.inference import extract_features, native_bf16, optimize_for_inference
from cnnlab.backbones.preprocess import CROP_PADDING
from cnnlab.datasets.folders import cache as folder_cache
from cnnlab.datasets.folders.load import FolderDataset, load_folder
from cnnlab.datasets.folders.scan import scan

FEATURES_VERSION = 2  # 2: the backbone's crop instead of a stretch, any variant, mirror images
BATCH = 32  # photos a forward pass: the fast copy's throughput is flat from 16 to 64 on a CPU


def crop_of(variant: str) -> tuple[int, int]:
    """(crop side, short side resized to): the backbone's evaluation crop, 224 of 256 for Lite0, 260 of 292 for Lite2."""
    size = VARIANTS[variant].resolution
    return size, size + CROP_PADDING


def load_photos(path: str | os.PathLike, variant: str, color: str = "auto", seed: int = 0,
                cache: bool = True) -> FolderDataset:
    """The folder's photos as `variant` sees them: uint8 (N, size, size, 3) centre crops."""
    size, resize_to = crop_of(variant)
    return load_folder(path, image_size=(size, size), color=color, seed=seed, resize_to=resize_to, cache=cache)


def feature_dtype(device: torch.device) -> torch.dtype:
    """fp32 on a CPU: the head is then fitted on the features the saved model (fp32) computes at test time (a head
    fitted on bf16 features scored 4 fewer of the 372 clothing test photos on fp32 test features than on bf16
    ones, measured 2026-12-04). The fp32 fast copy of Lite2 still runs 34 images/s on 2 quiet cores, against 24 for
    the eager fp32 Lite0 (bf16: 82). On a GPU, bf16 where it has it, else fp16: there speed is the point."""
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if native_bf16(device) else torch.float16


def fit_images(data: FolderDataset) -> np.ndarray:
    """The photos the head is fitted on: train/, with val/ when a test/ folder is the evaluation set."""
    return data.x_train if data.x_val is None else np.concatenate([data.x_train, data.x_val])


def fit_labels(data: FolderDataset) -> np.ndarray:
    return data.y_train if data.y_val is None else np.concatenate([data.y_train, data.y_val])


def pooled(fast: EfficientNetLite, images: np.ndarray, flip: bool = False,
           on_batch: Callable[[int], None] | None = None) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, 1280), batch by batch (`flip`: of the mirror images), so only one batch
    of pixels is ever copied; `on_batch(n)` after each batch of n photos."""
    out = []
    for start in range(0, len(images), BATCH):
        batch = torch.from_numpy(np.ascontiguousarray(images[start:start + BATCH]))  # (B, H, W, 3)
        out.append(extract_features(fast, batch.flip(2) if flip else batch, BATCH, pool=True).cpu())
        if on_batch:
            on_batch(len(batch))
    return torch.cat(out) if out else torch.zeros((0, 1280))


def cache_path(path: str | os.PathLike, variant: str, color: str, dtype: torch.dtype) -> Path:
    """Where the features of this folder's files (paths, sizes, times) live for this backbone, crop and dtype."""
    layout = scan(path)
    size, resize_to = crop_of(variant)
    options = {"features": f"efficientnet_{variant}-avg", "image_size": [size, size], "resize_to": resize_to,
               "color": color, "dtype": str(dtype), "version": FEATURES_VERSION}
    return folder_cache.cache_file(layout, layout.files(), options).with_suffix(".features.npz")


def photo_features(images: np.ndarray, net: EfficientNetLite, device: torch.device, flip: bool,
                   cache: Path | None, say: Callable[[str], None], name: str) -> dict[str, torch.Tensor]:
    """{"plain": (N, 1280)} and with `flip` {"flip": ...} of the mirror images; read from `cache` when it holds
    them for N photos (its key names the files and every option, so a changed file or setting computes anew)."""
    def note(text: str) -> None:  # a damaged or unwritable cache only costs computing the features again
        say(f"note: {text}")

    wanted = ["plain", "flip"] if flip else ["plain"]
    found: dict[str, torch.Tensor] = {}
    if cache is not None and (arrays := folder_cache.read_arrays(cache, note)) is not None:
        found = {k: torch.from_numpy(v) for k, v in arrays.items() if len(v) == len(images)}
    missing = [k for k in wanted if k not in found]
    if not missing:
        say(f"features: {name} read from the cache {cache}")
        return {k: found[k] for k in wanted}
    started = time.perf_counter()
    dtype = feature_dtype(device)
    fast = optimize_for_inference(net.to(device), dtype=dtype)
    for k in missing:
        found[k] = pooled(fast, images, flip=k == "flip")
    seconds = time.perf_counter() - started
    n = len(images) * len(missing)
    say(f"features: {name} ({str(dtype).removeprefix('torch.')}, {device.type}) on {n:,} images"
        f"{' (and their mirror images)' if 'flip' in missing else ''} in {seconds:.1f}s "
        f"({n / max(seconds, 1e-9):.1f} images/s)")
    if cache is not None:  # older entries of this folder and options are pruned
        folder_cache.write_arrays(cache, {k: v.numpy() for k, v in found.items()}, note)
    return {k: found[k] for k in wanted}
