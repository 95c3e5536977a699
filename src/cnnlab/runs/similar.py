"""Search a folder by image: the photos nearest to one image by cosine similarity of a backbone's embeddings
(`imagenet`'s, or a photo run's own backbone), over the embedding cache `cnnlab data check` shares.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cnnlab.backbones.search import Match, nearest
from cnnlab.datasets.image_walk import image_paths
from cnnlab.runs.embeddings import Embedder, backbone_embedder, embed_files, run_embedder
from cnnlab.runs.open_model import open_model
from cnnlab.runs.pretrained import PRETRAINED, is_pretrained_name


def embedder_named(run: str | os.PathLike) -> Embedder:
    """`imagenet` (or imagenet-lite1/-lite2): the pretrained backbone; else the backbone of a photo run."""
    if is_pretrained_name(run):
        return backbone_embedder(PRETRAINED[str(run)](weights="imagenet").variant)
    return run_embedder(open_model(run))


def similar_images(run: str | os.PathLike, image: str | os.PathLike, folder: str | os.PathLike, k: int = 10,
                   progress: bool = True, stream: Any = None) -> tuple[list[Match], dict[Path, str]]:
    """The `k` images of `folder` (walked recursively) nearest to `image`, and the files that could not be read.
    The image itself, when it is inside the folder, is left out."""
    if k < 1:
        raise ValueError(f"--top-k must be at least 1, got {k}")
    embedder = embedder_named(run)
    query = embed_files([image], embedder, progress=False)
    if query.errors:
        raise ValueError(f"{image}: {query.errors[0]}")
    files, _ = image_paths([folder])
    me = os.path.abspath(image)
    files = [f for f in files if os.path.abspath(f) != me]
    found = embed_files(files, embedder, progress=progress, stream=stream)  # reads what `data check` cached too
    ok = found.ok
    rows = [i for i in range(len(files)) if ok[i]]
    hits = nearest(query.vectors[0], found.vectors[ok], k)
    return ([Match(files[rows[r]], s) for r, s in hits],
            {files[i]: reason for i, reason in found.errors.items()})
