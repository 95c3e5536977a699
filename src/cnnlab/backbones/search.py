"""Search a folder by image: the nearest photos by cosine similarity of their backbone embeddings.

Exact search: one (N, D) @ (D,) product over the cached embeddings, no index to build or go stale. Its cost
grows with N: see README "Your repository" for the sizes measured.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cnnlab.backbones import embeddings
from cnnlab.backbones.embeddings import Embedder, backbone_embedder, embed_files, run_embedder


@dataclass(frozen=True)
class Match:
    path: Path
    similarity: float


def nearest(query: torch.Tensor, vectors: torch.Tensor, k: int) -> list[tuple[int, float]]:
    """(row, cosine) of the `k` rows of `vectors` (N, D) most similar to `query` (D,), most similar first."""
    if len(vectors) == 0:
        return []
    q = torch.nn.functional.normalize(query.float()[None], dim=1)[0]
    scores = (vectors.float() @ q) / torch.linalg.vector_norm(vectors.float(), dim=1).clamp_min(1e-12)
    values, rows = torch.topk(scores, min(k, len(scores)))
    return list(zip(rows.tolist(), values.tolist()))


def embedder_named(run: str | os.PathLike) -> Embedder:
    """`imagenet` (or imagenet-lite1/-lite2): the pretrained backbone; else the backbone of a photo run."""
    from cnnlab.backbones.zoo import ZOO_RUNS, is_zoo_name, load_run
    if is_zoo_name(run):
        variant = ZOO_RUNS[str(run)](weights="imagenet").variant
        return backbone_embedder(variant)
    return run_embedder(load_run(run))


def similar_images(run: str | os.PathLike, image: str | os.PathLike, folder: str | os.PathLike, k: int = 10,
                   progress: bool = True, stream: Any = None) -> tuple[list[Match], dict[Path, str]]:
    """The `k` images of `folder` (walked recursively) nearest to `image`, and the files that could not be read.
    The image itself, when it is inside the folder, is left out."""
    from cnnlab.datasets.image_walk import image_paths
    if k < 1:
        raise ValueError(f"--top-k must be at least 1, got {k}")
    embedder = embedder_named(run)
    query = embed_files([image], embedder, progress=False)
    if query.errors:
        raise ValueError(f"{image}: {query.errors[0]}")
    files, _ = image_paths([folder])
    me = os.path.abspath(image)
    files = [f for f in files if os.path.abspath(f) != me]
    # After a `data check` the rows with mirror images are cached: read those rather than embed again.
    audited = embeddings.cache_folder(embedder, flip=True).is_dir()
    found = embed_files(files, embedder, flip=audited, progress=progress, stream=stream)
    ok = found.ok
    rows = [i for i in range(len(files)) if ok[i]]
    hits = nearest(query.vectors[0], found.vectors[ok], k)
    return ([Match(files[rows[r]], s) for r, s in hits],
            {files[i]: reason for i, reason in found.errors.items()})
