"""Small folders of real photos for the transfer tests: random crops of scikit-image's bundled photos."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def crops(photo: np.ndarray, n: int, rng: np.random.Generator, keep: tuple[float, float] = (0.5, 1.0)
          ) -> list[Image.Image]:
    """Random crops (keeping a fraction in `keep` of each side), flips and sizes of one real photo."""
    h, w = photo.shape[:2]
    out = []
    for _ in range(n):
        s = rng.uniform(*keep)
        ch, cw = int(h * s), int(w * s)
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        img = Image.fromarray(photo[y:y + ch, x:x + cw])
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        side = int(rng.integers(100, 200))
        out.append(img.resize((side, max(65, int(side * ch / cw)))))
    return out


def photo_folder(root: Path, photos: dict[str, np.ndarray], n_train: int = 16, n_test: int = 8, seed: int = 0,
                 keep: tuple[float, float] = (0.5, 1.0)) -> Path:
    """root/{train,test}/<class>/<i>.jpg: `n_train` and `n_test` crops of each class's photo."""
    rng = np.random.default_rng(seed)
    for name, photo in photos.items():
        for split, n in (("train", n_train), ("test", n_test)):
            (root / split / name).mkdir(parents=True)
            for i, img in enumerate(crops(photo, n, rng, keep)):
                img.save(root / split / name / f"{i}.jpg", quality=90)
    return root
