"""What a backbone's embeddings say about an image folder: near-duplicates and likely label errors.

Near-duplicates, in two stages. Candidates: each photo's nearest neighbours whose pooled EfficientNet
embedding points nearly the same way (cosine of the L2-normalised vectors at least `CANDIDATE`), comparing
each photo also with the *mirror image* of every other, so a flipped copy is found too. The embedding
alone cannot decide: on small photos a copy resized to 60% or recompressed at JPEG quality 40 scored as low
as 0.79, while two distinct tiles of one photo scored 0.81 (tests/audit_support.py). So each candidate is
verified on pixels: the normalised cross-correlation of 24x24 grayscale thumbnails, the second one also
mirrored and centre-cropped by up to 16% of its side (a slightly cropped copy), must reach `PIXEL_MATCH`
(0.98).
Verified pairs are joined into groups; a group is within one class, across classes (one picture, two
labels) or across splits (leakage).

Label errors (the confident-learning recipe): a logistic-regression head is fitted k times on the
embeddings, each time without one fold, so every image gets probabilities from a head that never saw it
(out-of-fold). Each class gets a threshold, the mean out-of-fold probability of that class among the images
labelled with it; an image is a suspect when another class passes its threshold and beats the given label,
ranked by how little probability the given label keeps. The class that passed is the suggestion.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

CANDIDATE = 0.7  # embedding cosine from which a pair is checked on pixels (planted copies scored >= 0.78)
NEIGHBOURS = 5  # candidates per photo: its nearest neighbours above CANDIDATE
# Thumbnail correlation from which a candidate is a near-duplicate. Planted copies (60% size, JPEG quality 30-40,
# mirrored, 8% crops) scored >= 0.99 on the clothing photos and the scikit-image tiles; distinct tiles <= 0.62,
# but distinct product photos on plain backgrounds reach 0.95-0.97 (at 0.9: 415 false pairs on 3,821 clothing
# photos, at 0.98: one).
PIXEL_MATCH = 0.98
THUMB = 24  # thumbnail side: fine enough to tell two scenes apart, coarse enough to ignore JPEG noise and resizing
CROPS = (1.0, 0.92, 0.84)  # centre crops tried for the "slightly cropped" copies
THUMB_CACHE = 50_000  # thumbnails kept while pairs are verified: 3 x 24 x 24 float32 each, ~350 MB at most
FOLDS = 5  # out-of-fold probabilities: each head is fitted on 80% of the images
MIN_PER_CLASS = 2 * FOLDS  # fewer labelled images than this in a class: too few for a cross-validated head
MIN_CONFIDENCE = 0.5  # a suggestion must be the likelier class than all others together, not just pass its threshold
BLOCK = 2048  # rows of the similarity matrix computed at once: 2048 x N float32 stays small


def normalised(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=1)


def similar_pairs(vectors: torch.Tensor, mirrored: torch.Tensor | None = None, threshold: float = CANDIDATE,
                  neighbours: int = NEIGHBOURS) -> dict[tuple[int, int], float]:
    """{(i, j): similarity} with i < j: each row's `neighbours` nearest at or above `threshold`, by the larger of
    cos(v_i, v_j) and cos(v_i, m_j) (m: the mirror images' embeddings). Row blocks: memory is BLOCK x N."""
    v = normalised(vectors)
    m = normalised(mirrored) if mirrored is not None else None
    pairs: dict[tuple[int, int], float] = {}
    k = min(neighbours + 1, len(v))
    for start in range(0, len(v), BLOCK):
        sim = v[start:start + BLOCK] @ v.T  # (b, N)
        if m is not None:
            sim = torch.maximum(sim, v[start:start + BLOCK] @ m.T)
        sim[torch.arange(len(sim)), torch.arange(start, start + len(sim))] = -1.0  # not oneself
        values, cols = torch.topk(sim, k, dim=1)
        for r, (vals, cs) in enumerate(zip(values.tolist(), cols.tolist())):
            for value, c in zip(vals, cs):
                if value >= threshold:
                    key = (min(start + r, c), max(start + r, c))
                    pairs[key] = max(pairs.get(key, -1.0), value)
    return pairs


def thumbnails(path: os.PathLike) -> tuple[np.ndarray, ...] | None:
    """THUMB x THUMB grayscale thumbnails of the centre CROPS of an image, each zero mean and unit norm (one
    decode for all); None if unreadable. The mirror image's thumbnail is the array flipped left-right.
    Remembered per file key (path, size, times, inode), so a changed file is read again."""
    from cnnlab.backbones.embedding_cache import file_key
    return _thumbnails(str(path), file_key(Path(path)))


@functools.lru_cache(maxsize=THUMB_CACHE)
def _thumbnails(path: str, key: str | None) -> tuple[np.ndarray, ...] | None:
    from PIL import Image

    from cnnlab.datasets.image_files import ImageError, open_image
    try:
        img = open_image(path, at_least=4 * THUMB).convert("L")
    except (ImageError, OSError):
        return None
    out = []
    for crop in CROPS:
        w, h = img.size
        dx, dy = round(w * (1 - crop) / 2), round(h * (1 - crop) / 2)
        part = img.crop((dx, dy, w - dx, h - dy)) if crop < 1.0 else img
        a = np.asarray(part.resize((THUMB, THUMB), Image.Resampling.BOX), dtype=np.float32)
        a = a - a.mean()
        norm = np.linalg.norm(a)
        out.append(a / norm if norm > 0 else a)
    return tuple(out)


def pixel_match(a: os.PathLike, b: os.PathLike) -> float:
    """The best thumbnail correlation of two images, b also mirrored and either one centre-cropped (CROPS)."""
    ta, tb = thumbnails(a), thumbnails(b)
    if ta is None or tb is None:
        return 0.0
    best = 0.0
    for mirror in (False, True):
        flip = (lambda t: t[:, ::-1]) if mirror else (lambda t: t)
        pairs = [(ta[0], tb[0])] + [(ta[0], t) for t in tb[1:]] + [(t, tb[0]) for t in ta[1:]]
        best = max([best] + [float((x * flip(y)).sum()) for x, y in pairs])
    return best


def groups_of(pairs: list[tuple[int, int, float]], n: int) -> list[tuple[list[int], float]]:
    """Connected groups of the pairs (union-find), each with the lowest similarity that joined it, most similar first."""
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a
    for i, j, _ in pairs:
        parent[find(i)] = find(j)
    members: dict[int, list[int]] = {}
    lowest: dict[int, float] = {}
    for i, _, s in pairs:
        root = find(i)
        lowest[root] = min(lowest.get(root, 1.0), s)
    for i in range(n):
        members.setdefault(find(i), []).append(i)
    out = [(sorted(ms), lowest[root]) for root, ms in members.items() if len(ms) > 1]
    return sorted(out, key=lambda g: (-g[1], g[0]))


@dataclass(frozen=True)
class Suspect:
    index: int
    suggested: int
    confidence: float  # out-of-fold probability of the suggested class
    given: float  # out-of-fold probability of the label the image has


def out_of_fold_probabilities(vectors: torch.Tensor, labels: np.ndarray, n_classes: int, groups: np.ndarray | None = None,
                              folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """(N, n_classes) probabilities, each row from a logistic head fitted without that row's fold.

    `groups` (one id per row; near-duplicates share one) keeps each group in one fold: otherwise a copy filed
    under another class would teach the head that class for the photo it copies, and flag the original.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold
    x = normalised(vectors).numpy().astype(np.float64)
    groups = np.arange(len(x)) if groups is None else groups
    probs = np.zeros((len(x), n_classes))
    for train, held in StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(x, labels, groups):
        head = LogisticRegression(C=10.0, max_iter=1000)  # C: weak L2 on unit vectors; the folds guard against overfit
        head.fit(x[train], labels[train])
        probs[np.ix_(held, head.classes_)] = head.predict_proba(x[held])
    return probs


def suspect_labels(probs: np.ndarray, labels: np.ndarray) -> list[Suspect]:
    """Confident-learning suspects, the least self-confident first."""
    n_classes = probs.shape[1]
    thresholds = np.array([probs[labels == k, k].mean() if (labels == k).any() else 1.0 for k in range(n_classes)])
    out = []
    for i, (row, label) in enumerate(zip(probs, labels)):
        passing = [k for k in range(n_classes) if k != label and row[k] >= max(thresholds[k], MIN_CONFIDENCE)]
        if passing:
            best = max(passing, key=lambda k: row[k])
            out.append(Suspect(i, best, float(row[best]), float(row[label])))
    return sorted(out, key=lambda s: (s.given, -s.confidence))


def audit_folder(path: str | os.PathLike, embedder: Any = None, progress: bool = True,
                 cache: os.PathLike | bool = True) -> dict[str, Any]:
    """{"near_duplicates": [...], "suspect_labels": [...], "embeddings": {...}} for the folder's images."""
    from cnnlab.datasets.folders.scan import scan
    from cnnlab.runs.embeddings import backbone_embedder, embed_files
    layout = scan(path)
    files = layout.files()
    embedder = embedder or backbone_embedder()
    emb = embed_files([p for _, _, p in files], embedder, flip=True, progress=progress, cache=cache)
    ok = np.flatnonzero(emb.ok)
    splits = [files[i][0] for i in ok]
    labels = np.array([files[i][1] for i in ok], dtype=np.int64)
    rels = [layout.rel(files[i][2]) for i in ok]
    names = layout.class_names
    vectors, mirrored = emb.vectors[ok], emb.mirrored[ok] if emb.mirrored is not None else None
    paths = [files[i][2] for i in ok]
    verified = [(i, j, sim) for (i, j), sim in similar_pairs(vectors, mirrored).items()
                if pixel_match(paths[i], paths[j]) >= PIXEL_MATCH]
    near, group_ids = [], np.arange(len(ok))
    for members, sim in groups_of(verified, len(ok)):
        group_ids[members] = members[0]
        near.append({"paths": [rels[i] for i in members], "similarity": round(sim, 4),
                     "splits": sorted({splits[i] for i in members}, key=["train", "val", "test"].index),
                     "classes": sorted({names[labels[i]] for i in members})})
    suspects: list[dict[str, Any]] = []
    counts = np.bincount(labels, minlength=len(names))
    skipped = "" if counts.min() >= MIN_PER_CLASS else (
        f"label check skipped: every class needs at least {MIN_PER_CLASS} images, "
        f"{names[int(counts.argmin())]} has {int(counts.min())}")
    if not skipped and importlib.util.find_spec("sklearn") is None:
        skipped = "label check skipped: it needs scikit-learn (pip install 'cnnlab[audit]')"
    if not skipped:
        for s in suspect_labels(out_of_fold_probabilities(vectors, labels, len(names), group_ids), labels):
            suspects.append({"path": rels[s.index], "label": names[labels[s.index]], "suggested": names[s.suggested],
                             "confidence": round(s.confidence, 4), "label_probability": round(s.given, 4),
                             "split": splits[s.index]})
    return {"root": str(layout.root), "images": len(ok), "near_duplicates": near, "suspect_labels": suspects,
            "embeddings": {"model": embedder.name, "candidate": CANDIDATE, "pixel_match": PIXEL_MATCH, "folds": FOLDS,
                           "unreadable": len(emb.errors), "label_check": skipped or "done"}}
