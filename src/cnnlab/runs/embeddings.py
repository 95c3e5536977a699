"""Pooled backbone embeddings of image files: streamed in batches, cached per file, resumable.

`embed_files(files)` decodes the files in threads while the fast inference copy of the backbone
(`optimize_for_inference`: folded BN, channels_last, bf16 where native) embeds the previous batch, and
returns an (N, D) float32 tensor plus the reason for each file that could not be used. Every photo is seen
as the backbone was evaluated on ImageNet: short side to size + 32, centre crop (`to_model_input` with
`resize_to`, as `cnnlab predict imagenet` does). Rows are cached per file (see `embedding_cache`), so the
second run over a folder reads them back, a changed file is embedded again and a stopped run resumes.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from cnnlab.backbones import embedding_cache
from cnnlab.backbones.efficientnet_lite import EfficientNetLite
from cnnlab.backbones.embedding_cache import EmbeddingCache, file_key
from cnnlab.backbones.inference import extract_features, optimize_for_inference
from cnnlab.backbones.preprocess import CROP_PADDING
from cnnlab.datasets.decode_stream import decoded_batches
from cnnlab.progress import CountProgress

EMBEDDINGS_VERSION = 1  # part of every cache name: bump when the preprocessing or pooling changes


@dataclass
class Embedder:
    """A backbone without its top, its input and preprocessing, and a name that identifies its outputs."""
    name: str  # cache identity: variant, weights, size, crop and compute dtype
    net: torch.nn.Module  # as `optimize_for_inference` makes it
    input_shape: tuple[int, int, int]
    preprocessing: dict[str, Any]
    dim: int

    def __call__(self, images: np.ndarray | torch.Tensor, flip: bool = False) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> (B, D) float32; `flip`: (B, 2D), the embedding of the mirrored image after it."""
        x = torch.as_tensor(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
        if len(x) == 0:
            return torch.zeros((0, self.dim * (2 if flip else 1)))
        pooled = extract_features(self.net, x, batch_size=len(x), pool=True)
        if flip:
            mirrored = extract_features(self.net, x.flip(2).contiguous(), batch_size=len(x), pool=True)
            pooled = torch.cat([pooled, mirrored], 1)
        return pooled.cpu()


def crop_preprocessing(size: int) -> dict[str, Any]:
    """The backbone's evaluation preprocessing for `to_model_input`: short side to size + 32, centre crop."""
    return {"scale": 255, "size": [size, size], "channels": 3, "color": "rgb", "resize_to": size + CROP_PADDING}


def embedder_for(net: EfficientNetLite, weights_name: str, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> Embedder:
    """An Embedder from a (pretrained or fine-tuned) backbone network; `weights_name` names its weights. It runs
    where `net` is, or on `device` (`net` is moved there); each batch of pixels follows it, its rows come back."""
    fast = optimize_for_inference(net if device is None else net.to(device), dtype)
    if getattr(fast, "include_top", False):
        raise ValueError("an embedder needs the backbone without its classifier top (include_top=False)")
    compute = next(fast.parameters()).dtype
    size = net.variant.resolution
    name = f"{weights_name}-{size}-crop{size + CROP_PADDING}-{str(compute).removeprefix('torch.')}-v{EMBEDDINGS_VERSION}"
    return Embedder(name, fast, (size, size, 3), crop_preprocessing(size), fast.head.conv.out_channels)


def backbone_embedder(variant: str = "lite0", dtype: torch.dtype | None = None,
                      device: torch.device | str | None = None) -> Embedder:
    """The ImageNet-pretrained EfficientNet-Lite `variant` (lite0: its weights ship with cnnlab)."""
    from cnnlab.backbones.weights import load_pretrained, load_state_strict
    net = EfficientNetLite(variant, include_top=False)
    load_state_strict(net, load_pretrained(variant))
    return embedder_for(net.eval(), f"efficientnet_{variant}-imagenet", dtype, device)


def run_embedder(model: Any) -> Embedder:
    """The backbone of a model whose first layer is an EfficientNet-Lite (a photo run, or `imagenet`):
    its own weights (fine-tuned or not), named by their digest so two runs never share cache rows."""
    from cnnlab.spec.backbone import BackboneLayer
    module = model.module
    first = next(iter(module.children()), None) if isinstance(module, torch.nn.Sequential) else None
    if not isinstance(first, BackboneLayer):
        raise ValueError("embeddings need a model built on a pretrained backbone (a photo run or imagenet); "
                         f"this one starts with {type(first).__name__ if first is not None else type(module).__name__}")
    net = EfficientNetLite(first.variant, include_top=False)
    state = {k: v for k, v in first.net.state_dict().items() if not k.startswith("classifier.")}
    net.load_state_dict(state)
    digest = hashlib.sha256()
    for key, value in sorted(state.items()):
        digest.update(key.encode() + value.detach().cpu().contiguous().numpy().tobytes())
    return embedder_for(net.eval(), f"efficientnet_{first.variant}-{digest.hexdigest()[:12]}")


@dataclass
class Embeddings:
    """Embeddings of files in the caller's order; rows of files in `errors` are zeros."""
    paths: list[Path]
    vectors: torch.Tensor  # (N, D) float32
    errors: dict[int, str] = field(default_factory=dict)  # position -> reason
    mirrored: torch.Tensor | None = None  # (N, D): of each image flipped left-right, when asked for
    computed: int = 0  # files decoded and embedded by this call (the others came from the cache or failed)

    @property
    def ok(self) -> np.ndarray:
        """Bool mask of the files that have an embedding."""
        mask = np.ones(len(self.paths), dtype=bool)
        mask[list(self.errors)] = False
        return mask


def cache_folder(embedder: Embedder, flip: bool) -> Path:
    from cnnlab.datasets.download import cache_dir
    return cache_dir() / "embeddings" / (embedder.name + ("+flip" if flip else ""))


def _fill_from_mirrored(embedder: Embedder, keys: list[str | None], rows: np.ndarray, found: np.ndarray,
                        slice_rows: int = 4096) -> np.ndarray:
    """Rows of `keys` not yet `found` read from the cache of rows with mirror images (their first half is the
    plain embedding), a slice at a time so the wide rows never take more than `slice_rows` x 2D floats."""
    folder = cache_folder(embedder, flip=True)
    extra = np.zeros(len(keys), dtype=bool)
    if not folder.is_dir():
        return extra
    wide_cache = EmbeddingCache(folder, 2 * embedder.dim)
    missing = np.flatnonzero(~found)
    for start in range(0, len(missing), slice_rows):
        part = missing[start:start + slice_rows]
        wide = np.zeros((len(part), 2 * embedder.dim), dtype=np.float32)
        hit = wide_cache.fill([keys[i] for i in part], wide)
        rows[part[hit]] = wide[hit, :embedder.dim]
        extra[part[hit]] = True
    return extra


def embed_files(files: Sequence[str | Path], embedder: Embedder | None = None, *, flip: bool = False,
                batch_size: int = 32, cache: Path | bool = True, progress: bool = True,
                stream: Any = None, workers: int | None = None) -> Embeddings:
    """(N, D) float32 embeddings of `files` (and of their mirror images with `flip`), cached per file.

    `cache`: True for the cnnlab cache folder, a folder, or False for none. Memory: the (N, D) result,
    plus a few decoded batches in flight.
    """
    embedder = embedder or backbone_embedder()
    paths = [Path(f) for f in files]
    width = embedder.dim * (2 if flip else 1)
    rows = np.zeros((len(paths), width), dtype=np.float32)
    keys = [file_key(p) for p in paths]
    store = None if cache is False else EmbeddingCache(
        cache_folder(embedder, flip) if cache is True else Path(cache), width)
    found = store.fill(keys, rows) if store else np.zeros(len(paths), bool)
    if store and cache is True and not flip:  # rows `data check` cached with their mirror images hold these too
        found |= _fill_from_mirrored(embedder, keys, rows, found)
    todo = np.flatnonzero(~found)
    errors: dict[int, str] = {}
    computed = 0
    bar = CountProgress(len(paths), "embed", start=int(found.sum()), enabled=progress, stream=stream)
    done = int(found.sum())
    try:
        for batch in decoded_batches([paths[i] for i in todo], embedder.input_shape, embedder.preprocessing,
                                     batch_size, workers):
            out = embedder(batch.images, flip).numpy()
            for j, local in enumerate(batch.indices):
                i = int(todo[local])
                rows[i] = out[j]
                if store:
                    store.add(keys[i], out[j])
            if store and len(store.pending_keys) >= embedding_cache.CHUNK_ROWS:
                store.flush()  # whole batches a chunk: a resumed run groups the rest into the same batches
            errors.update({int(todo[local]): reason for local, reason in batch.errors})
            computed += len(batch.indices)
            done += len(batch.indices) + len(batch.errors)
            bar.update(done)
    finally:
        if store:
            store.flush()
        bar.close()
    vectors = torch.from_numpy(rows)
    if flip:
        return Embeddings(paths, vectors[:, :embedder.dim].contiguous(), errors, vectors[:, embedder.dim:].contiguous(),
                          computed)
    return Embeddings(paths, vectors, errors, computed=computed)
