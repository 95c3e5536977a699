"""A small image folder of real photos with planted faults, for the embedding audit's tests.

Each class is one of scikit-image's photos cut into a 3x4 grid of distinct tiles (12 images); train/ holds
9 tiles of each, test/ 3. Planted: near-duplicates (copies of tiles resized to 60%, recompressed as JPEG
quality 40, mirrored, or with 8% cut off each side), placed in the same class, in the other split or in
another class; and flipped labels (tiles moved to another class folder of their split).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

CLASSES = ("astronaut", "coffee", "chelsea", "motorcycle", "immunohistochemistry", "camera")
KINDS = ("resized", "recompressed", "mirrored", "cropped")


def _photo(name: str) -> np.ndarray:
    from skimage import data
    if name == "motorcycle":
        return data.stereo_motorcycle()[0]
    photo = getattr(data, name)()
    return np.stack([photo] * 3, axis=-1) if photo.ndim == 2 else photo[..., :3]


def tiles(photo: np.ndarray, rows: int = 3, cols: int = 4) -> list[Image.Image]:
    h, w = photo.shape[0] // rows, photo.shape[1] // cols
    return [Image.fromarray(photo[r * h:(r + 1) * h, c * w:(c + 1) * w]) for r in range(rows) for c in range(cols)]


def copy_of(img: Image.Image, kind: str) -> Image.Image:
    if kind == "resized":
        return img.resize((img.width * 6 // 10, img.height * 6 // 10), Image.Resampling.BILINEAR)
    if kind == "mirrored":
        return ImageOps.mirror(img)
    if kind == "cropped":
        dx, dy = img.width * 8 // 100, img.height * 8 // 100
        return img.crop((dx, dy, img.width - dx, img.height - dy))
    return img


def planted_folder(root: Path, n_dups: int = 10, n_flips: int = 6, seed: int = 0) -> dict:
    """Write the folder; returns {"pairs": [(original, copy) relative paths], "flips": {path: true class}}."""
    rng = np.random.default_rng(seed)
    where: dict[str, tuple[str, str]] = {}
    for name in CLASSES:
        for i, tile in enumerate(tiles(_photo(name))):
            split = "train" if i % 4 else "test"
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            tile.save(folder / f"{name}-{i:02d}.jpg", quality=92)
            where[f"{split}/{name}/{name}-{i:02d}.jpg"] = (split, name)
    order = list(where)
    rng.shuffle(order)
    pairs, flips = [], {}
    for k, rel in enumerate(order[:n_dups]):
        split, name = where[rel]
        kind, place = KINDS[k % 4], ("same_class", "other_split", "other_class")[k % 3]
        if place == "other_split":
            split = "test" if split == "train" else "train"
        if place == "other_class":
            name = CLASSES[(CLASSES.index(name) + 1 + k % (len(CLASSES) - 1)) % len(CLASSES)]
        copy_rel = f"{split}/{name}/copy-{kind}-{k}.jpg"
        copy_of(Image.open(root / rel), kind).save(root / copy_rel, quality=40 if kind == "recompressed" else 92)
        pairs.append((rel, copy_rel))
    for k, rel in enumerate(order[n_dups:n_dups + n_flips]):
        split, name = where[rel]
        other = CLASSES[(CLASSES.index(name) + 1 + k % (len(CLASSES) - 1)) % len(CLASSES)]
        moved = f"{split}/{other}/{Path(rel).name}"
        (root / rel).rename(root / moved)
        flips[moved] = name
    return {"pairs": pairs, "flips": flips}
