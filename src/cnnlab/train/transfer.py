"""Transfer learning on photo folders: a frozen ImageNet backbone, its pooled features computed once, a logistic
regression head fitted on them with its L2 chosen by cross-validation, the backbone too.

The rule lives here (`transfer_decision`: which `train` goes to the pretrained backbone) with the model's spec;
`cnnlab.runs.photos.train_photos` makes the choices by cross-validation and saves the run.
"""
from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from cnnlab.datasets.folders.scan import scan
from cnnlab.spec import layers as L
from cnnlab.train.photo_features import crop_of

PHOTO_MIN_SIDE = 64  # median short side above this: photos (digits, icons and CIFAR-like thumbnails are 28-64 px)
BACKBONES: dict[str, type[L.EfficientNetLiteBase]] = {
    "lite0": L.EfficientNetLite0, "lite1": L.EfficientNetLite1, "lite2": L.EfficientNetLite2}


def is_photo_folder(path: str | os.PathLike, sample: int = 200) -> tuple[bool, str]:
    """(photos?, why): the median short side of (up to `sample` of) the images is over PHOTO_MIN_SIDE pixels.

    Only headers are read; whether they are colour is known after decoding (see `train_photos`).
    """
    files = scan(path).files()
    step = max(1, len(files) // sample)
    sides = [s for s in (_short_side(p) for _, _, p in files[::step]) if s]
    if not sides:
        return False, "no readable images"
    median = statistics.median(sides)
    if median > PHOTO_MIN_SIDE:
        return True, f"photos: median short side {median:g} px > {PHOTO_MIN_SIDE}"
    return False, f"small images: median short side {median:g} px <= {PHOTO_MIN_SIDE}"


@dataclass(frozen=True)
class TransferRequest:
    """What a `train` asked for, as far as the photos-or-scratch rule cares; front ends fill it from their options.

    transfer: True forces the pretrained backbone, False refuses it, None lets the rule decide. fine_tune: also
    train the top of the backbone (implies transfer). chosen: the user's settings that pick a from-scratch model
    or recipe, named as the user gave them (("--model", "--epochs")): they keep the from-scratch path, and
    contradict a forced transfer.
    """
    data: str
    transfer: bool | None = None
    fine_tune: bool = False
    chosen: tuple[str, ...] = ()


@dataclass(frozen=True)
class TransferDecision:
    use: bool  # train on the pretrained backbone (`train_photos`)
    reason: str  # the line to print; "" when there is nothing to say (not an image folder)


def transfer_decision(request: TransferRequest, gray: bool = False) -> TransferDecision:
    """Whether a `train` uses the pretrained backbone, and why. The default: a folder of photos (median short
    side over PHOTO_MIN_SIDE) with no model or recipe chosen. `gray`: the folder turned out all gray once
    decoded (`train_photos` returned None), which falls back to the seed CNN. ValueError on contradictions."""
    flag = "--fine-tune" if request.fine_tune else "--transfer"
    forced = request.fine_tune or request.transfer is True
    if request.fine_tune and request.transfer is False:
        raise ValueError("--fine-tune trains the pretrained backbone, so it cannot go with --no-transfer")
    if not Path(request.data).is_dir():
        if forced:
            raise ValueError(f"{flag} trains on a folder of photos; {request.data!r} is not a folder")
        return TransferDecision(False, "")
    if request.transfer is False:
        return TransferDecision(False, "model: trained from scratch (--no-transfer)")
    if request.chosen:
        chosen = ", ".join(request.chosen)
        if forced:
            raise ValueError(f"{flag} trains a pretrained EfficientNet-Lite with its own recipe, which {chosen} "
                             "would change; drop them, or add --no-transfer to train from scratch")
        return TransferDecision(False, f"model: trained from scratch as chosen ({chosen}; --transfer uses the "
                                       "pretrained backbone)")
    if gray:
        return TransferDecision(False, "the images are all gray: training the seed CNN from scratch instead"
                                + (" (--color rgb gives the pretrained backbone three equal channels)" if forced else ""))
    what = "a pretrained EfficientNet-Lite (ImageNet) + a logistic-regression head, both chosen by cross-validation" + (
        ", then its top stages fine-tuned" if request.fine_tune else "")
    if forced:
        return TransferDecision(True, f"model: {what} ({flag})")
    photos, why = is_photo_folder(request.data)
    if not photos:
        return TransferDecision(False, f"model: the seed CNN from scratch ({why}; --transfer uses the pretrained backbone)")
    return TransferDecision(True, f"model: {what} ({why}; --no-transfer trains the seed CNN from scratch)")


def _short_side(path: Path) -> int | None:
    try:
        with Image.open(path) as img:
            return min(img.size)
    except Exception:  # noqa: BLE001 - the loader reports unreadable files with their reason
        return None


def photo_spec(n_classes: int, variant: str = "lite0", trainable: bool = False) -> L.ModelSpec:
    """The transfer model at the backbone's own size; `trainable` records a fine-tuned backbone."""
    size, _ = crop_of(variant)
    return L.ModelSpec((BACKBONES[variant](weights="imagenet", include_top=False, trainable=trainable),
                        L.GlobalAveragePooling2D(), L.Dense(n_classes, activation="softmax")), (size, size, 3))
