"""A photo folder as a pretrained backbone sees it, streamed from disk: labels and splits from the folder scan
(`load_folder`'s rules, through `split_files`), pooled features per file from `embed_files` (decoded in threads while
the network runs, with the backbone's evaluation crop, cached per file in chunks so a stopped run resumes).

Memory holds the (N, 1280) float32 features (twice with mirror images) and a few batches of pixels, never the photos,
so it does not grow with the folder beyond those rows. The test photos are scored from fp32 features through the
head, which is what the saved model computes (`cnnlab evaluate`).
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from cnnlab.backbones.efficientnet_lite import EfficientNetLite
from cnnlab.datasets.folders.load import FolderFiles, all_gray, color_choice, crop_note, split_files
from cnnlab.datasets.folders.scan import scan
from cnnlab.runs.embeddings import Embedder, Embeddings, backbone_embedder, cache_folder, embed_files, embedder_for
from cnnlab.train.photo_features import crop_of, feature_dtype

BATCH = 32  # photos a forward pass: the fast copy's throughput is flat from 16 to 64 on a CPU


@dataclass
class PhotoFeatures:
    """One backbone's pooled features of every file of a photo folder (rows of unusable files are zeros)."""
    variant: str
    files: FolderFiles
    embedder: Embedder
    plain: torch.Tensor  # (N, D) float32
    mirrored: torch.Tensor | None  # (N, D) of the mirror images, when asked for
    computed: int  # files embedded by this run; the others came from the cache
    seconds: float

    @property
    def fit(self) -> np.ndarray:
        """Positions of the head's photos: train/, with val/ when a test/ folder is the evaluation set."""
        parts = self.files.parts
        return np.concatenate([parts["train"], parts.get("val", np.zeros(0, dtype=np.int64))])

    def line(self, flip: bool) -> str:
        n = sum(len(rows) for rows in self.files.parts.values())  # the usable files
        what = f"{n:,} photos" + (" and their mirror images" if flip else "")
        dtype = str(next(self.embedder.net.parameters()).dtype).removeprefix("torch.")
        device = next(self.embedder.net.parameters()).device.type
        speed = f" ({self.computed / max(self.seconds, 1e-9):.1f} images/s)" if self.computed else ""
        return (f"features: EfficientNet-{self.variant.capitalize()} ({dtype}, {device}) of {what}: "
                f"{self.computed:,} computed, {n - self.computed:,} from the cache, in {self.seconds:.1f}s{speed}")


def stream_features(path: str | os.PathLike, variant: str, color: str, seed: int, device: torch.device, flip: bool,
                    cache: bool, progress: bool) -> PhotoFeatures | None:
    """`variant`'s features of the folder's files, in the dtype `feature_dtype(device)` picks, on `device`; None
    when the photos are gray (`color` "grayscale", or "auto" and every usable one is gray): no ImageNet backbone."""
    started = time.perf_counter()
    chosen, color_note = color_choice(color, False)  # a bad colour stops it before any work
    size, resize_to = crop_of(variant)
    layout = scan(path)
    paths = [p for _, _, p in layout.files()]
    if color == "grayscale" or (color == "auto" and all_gray(paths, (size, size), resize_to)):
        return None
    embedder = backbone_embedder(variant, feature_dtype(device), device)
    found = embed_files(paths, embedder, flip=flip, batch_size=BATCH, cache=cache, progress=progress)
    meta = {"image_size": [size, size], "size_note": crop_note(size, resize_to), "color": chosen,
            "color_note": color_note, "resize_to": resize_to}
    seconds = time.perf_counter() - started
    files = split_files(layout, found.errors, meta, seed=seed, cached=found.computed == 0,
                        cache_file=cache_folder(embedder, flip) if cache else None, seconds=seconds)
    return PhotoFeatures(variant, files, embedder, found.vectors, found.mirrored, found.computed, seconds)


def with_mirrors(feats: PhotoFeatures, cache: bool, progress: bool) -> PhotoFeatures:
    """`feats` with the features of the mirror images too (the same files; the plain rows are kept)."""
    started = time.perf_counter()
    found = embed_files(feats.files.paths, feats.embedder, flip=True, batch_size=BATCH, cache=cache, progress=progress)
    _same_files(feats, found)
    return dataclasses.replace(feats, mirrored=found.mirrored, computed=found.computed,
                               seconds=time.perf_counter() - started)


def held_out_logits(feats: PhotoFeatures, dense: torch.nn.Linear, tuned: EfficientNetLite | None, cache: bool,
                    progress: bool) -> torch.Tensor:
    """(N_test, K) logits of the test photos as the saved model computes them: fp32 features through `dense`.

    The features already computed serve when they are fp32 and the backbone is the pretrained one; otherwise
    (bf16/fp16 on a GPU, or a fine-tuned backbone `tuned`) the test files are embedded again in fp32."""
    test = feats.files.parts["test"]
    if tuned is None and next(feats.embedder.net.parameters()).dtype == torch.float32:
        x = feats.plain[test]
    else:
        device = next(feats.embedder.net.parameters()).device
        embedder = (backbone_embedder(feats.variant, torch.float32, device) if tuned is None else
                    embedder_for(tuned, f"efficientnet_{feats.variant}-fine-tuned", torch.float32))
        found = embed_files([feats.files.paths[i] for i in test], embedder, batch_size=BATCH,
                            cache=cache and tuned is None, progress=progress)
        if found.errors:
            i, reason = next(iter(found.errors.items()))
            raise ValueError(f"{found.paths[i]} changed during training and cannot be scored now: {reason}")
        x = found.vectors
    with torch.no_grad():
        return dense(x.to(dense.weight.device, dense.weight.dtype)).float().cpu()


def _same_files(feats: PhotoFeatures, found: Embeddings) -> None:
    """A file used by the first pass that became unreadable by the second must not pass unnoticed."""
    used = set(np.concatenate(list(feats.files.parts.values())).tolist())
    changed = sorted(set(found.errors) & used)
    if changed:
        raise ValueError(f"{found.paths[changed[0]]} changed during training: {found.errors[changed[0]]}")
