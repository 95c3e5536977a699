"""`cnnlab data check|export` and the image-folder options of `cnnlab train`: arguments and glue to the core."""
from __future__ import annotations

import argparse
import json
from typing import Any, Callable

from cnnlab.datasets.dataset import Dataset
from cnnlab.train.augment import PRESETS, AugmentOptions


def _image_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an image size like 64x64 (height x width), got {text!r}") from None
    if min(h, w) < 1:
        raise argparse.ArgumentTypeError(f"image size must be positive, got {text!r}")
    return h, w


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="class counts, imbalance, sizes, unreadable files and duplicates of an "
                           "image folder, each with a suggested fix")
    check.add_argument("path", help="image folder (one subfolder per class, or train/ val/ test/ split folders)")
    check.add_argument("--json", action="store_true")
    export = sub.add_parser("export", help="write a built-in dataset as image files in the folder layout that "
                            "`train --data DIR` reads")
    export.add_argument("name", help="built-in dataset (mnist, fashion_mnist, ...)")
    export.add_argument("--out", required=True, help="folder to create")
    export.add_argument("--format", choices=["png", "bmp", "webp", "jpeg"], default="png",
                        help="image format (default png; all but jpeg are lossless)")
    export.add_argument("--layout", choices=["splits", "classes"], default="splits",
                        help="splits: OUT/train/<class>/, OUT/test/<class>/ (default); classes: OUT/<class>/")
    export.add_argument("--limit", type=int, help="only the first N images of each split")
    export.add_argument("--data-dir", help="folder holding the dataset's files, when not in the usual places")
    export.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def run(args: argparse.Namespace) -> int:
    if args.data_command == "check":
        from cnnlab.datasets.folders.check import check_folder, format_check
        report = check_folder(args.path)
        print(json.dumps(report, indent=2) if args.json else format_check(report))
        return 0
    from cnnlab.datasets.folders.export import export_images
    from cnnlab.datasets.registry import load
    data = load(args.name, args.data_dir)
    summary = export_images(data, args.out, args.format, args.layout, args.limit, overwrite=args.overwrite)
    where = ", ".join(f"{n:,} in {summary.out / split}" if split else f"{n:,} in {summary.out}"
                      for split, n in summary.counts.items())
    print(f"wrote {sum(summary.counts.values()):,} {args.format.upper()} files ({where}), one folder per class: "
          f"{', '.join(summary.folder_names)}")
    print(f"train on them with: cnnlab train --data {summary.out}")
    return 0


# --- train ---------------------------------------------------------------------------------------------
def add_train_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("image folders (--data DIR)")
    g.add_argument("--image-size", type=_image_size, metavar="HxW",
                   help="resize every image to this (default: chosen from the data and printed)")
    g.add_argument("--color", choices=["auto", "rgb", "grayscale"], default="auto",
                   help="colour mode (default auto: grayscale when every image is gray)")
    g.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                   help="decode once into a file in the cache folder and read batches from it instead of holding "
                        "the images in memory (default: only when they would need over half the free memory)")
    g.add_argument("--class-weight", choices=["auto", "balanced", "none"], default="auto",
                   help="weight the loss per class: auto (default) does it when the largest class has more than "
                        "1.5x the images of the smallest; balanced always; none never")
    a = p.add_argument_group("augmentation (random changes to each training batch)")
    a.add_argument("--augment", nargs="?", const="auto", choices=["auto", *PRESETS],
                   help="turn it on: digits (shift, rotation, zoom) or photos (also flips, brightness, contrast); "
                        "auto picks digits for grayscale data, photos for colour")
    a.add_argument("--shift", type=float, metavar="FRACTION", help="largest shift, a fraction of the size (0.1)")
    a.add_argument("--rotation", type=float, metavar="DEGREES", help="largest rotation either way (10)")
    a.add_argument("--zoom", type=float, metavar="FRACTION", help="largest zoom in or out (0.1)")
    a.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="random horizontal flips (off for digits, on for photos)")
    a.add_argument("--brightness", type=float, metavar="DELTA", help="largest brightness change, pixels in [0, 1]")
    a.add_argument("--contrast", type=float, metavar="FRACTION", help="largest contrast change")


def folder_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"image_size": args.image_size, "color": args.color, "stream": getattr(args, "stream", None)}


def train_options(args: argparse.Namespace, data: Dataset, say: Callable[..., None]) -> dict[str, Any]:
    """The TrainConfig fields chosen by the folder, class-weight and augmentation flags; says what it chose."""
    import numpy as np

    from cnnlab.datasets.folders.check import IMBALANCE_THRESHOLD, auto_class_weight, class_weights, imbalance_ratio
    from cnnlab.datasets.folders.load import FolderDataset

    if isinstance(data, FolderDataset) and data.report is not None:
        for line in data.report.lines():
            say(line)
    options: dict[str, Any] = {}
    k = len(data.class_names)
    counts = np.bincount(data.y_train, minlength=k).tolist()
    weights = {"auto": auto_class_weight(data.y_train, k), "balanced": class_weights(counts), "none": None}[args.class_weight]
    if weights is not None:
        options["class_weight"] = weights
        why = (f"the largest class has {imbalance_ratio(counts):.1f}x the images of the smallest (over "
               f"{IMBALANCE_THRESHOLD}); --class-weight none turns this off") if args.class_weight == "auto" else "as asked"
        say("class weights: " + ", ".join(f"{n} {w:g}" for n, w in zip(data.class_names, weights)) + f" ({why})")
    augment = augment_options(args, data)
    if augment is not None:
        options["augment"] = augment
        say(f"augmentation: {augment.describe()}")
    return options


def augment_options(args: argparse.Namespace, data: Dataset) -> AugmentOptions | None:
    given = {name: getattr(args, field) for name, field in (("shift", "shift"), ("rotation", "rotation"),
             ("zoom", "zoom"), ("horizontal_flip", "flip"), ("brightness", "brightness"), ("contrast", "contrast"))
             if getattr(args, field) is not None}
    if args.augment is None and not given:
        return None
    preset = args.augment or "none"
    if preset == "auto":
        preset = "digits" if data.input_shape[-1] == 1 else "photos"
    base = PRESETS.get(preset, AugmentOptions())
    return AugmentOptions(**{**base.to_dict(), **given})


def print_bad_files(data: Dataset) -> None:
    from cnnlab.datasets.folders.load import FolderDataset
    if isinstance(data, FolderDataset) and data.report is not None and data.report.bad_files:
        print(data.report.bad_files_text())
