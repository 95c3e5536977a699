"""Exact nearest-neighbour search by cosine similarity: one (N, D) @ (D,) product over the cached embeddings,
no index to build or go stale. Its cost grows with N: see README "Your repository" for the sizes measured.
`cnnlab.runs.similar` searches a folder by image with it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch


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
