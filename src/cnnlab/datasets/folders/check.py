"""`cnnlab data check`: what is in an image folder and what is wrong with it, each problem with a fix.

Class counts, imbalance and the class weights `train` would use; image size, aspect and channel
statistics; files that cannot be read; and exact duplicates (same decoded pixels, whatever the file
format) within a class, across classes (one picture with two labels) and across splits (leakage).
"""
from __future__ import annotations

import hashlib
import os
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cnnlab.datasets.folders.load import default_image_size, map_in_threads
from cnnlab.datasets.folders.scan import scan
from cnnlab.datasets.image_files import BadImageError, open_image

IMBALANCE_THRESHOLD = 1.5  # largest class / smallest class above which `train` weights the loss


def class_weights(counts: Sequence[int]) -> tuple[float, ...]:
    """'Balanced' weights n / (k * n_c) (scikit-learn's formula): every class adds the same to the loss."""
    total, k = sum(counts), len(counts)
    return tuple(round(total / (k * max(c, 1)), 4) for c in counts)


def imbalance_ratio(counts: Sequence[int]) -> float:
    return max(counts) / max(min(counts), 1)


def auto_class_weight(y: np.ndarray, num_classes: int, threshold: float = IMBALANCE_THRESHOLD) -> tuple[float, ...] | None:
    """Balanced class weights when the largest class outnumbers the smallest by more than `threshold`, else None."""
    counts = np.bincount(np.asarray(y), minlength=num_classes).tolist()
    return class_weights(counts) if imbalance_ratio(counts) > threshold else None


@dataclass(frozen=True)
class _Info:
    rel: str
    split: str
    label: int
    size: tuple[int, int] | None  # (height, width) after EXIF rotation; None for a bad file
    kind: str  # channel description, or the reason a file is bad
    digest: str | None


_KINDS = {"1": "grayscale", "L": "grayscale", "F": "grayscale", "LA": "grayscale+alpha", "RGB": "rgb",
          "YCbCr": "rgb", "CMYK": "cmyk", "RGBA": "rgba", "RGBa": "rgba", "P": "palette"}


def _inspect(path: Path) -> tuple[tuple[int, int], str, str] | str:
    try:
        img = open_image(path)
    except (BadImageError, FileNotFoundError) as exc:
        return getattr(exc, "reason", "disappeared while checking")
    kind = "grayscale" if img.mode.startswith("I") else _KINDS.get(img.mode, img.mode.lower())
    if kind == "palette" and "transparency" in img.info:
        kind = "palette+alpha"
    digest = hashlib.sha256(f"{img.mode}{img.size}".encode())
    digest.update(img.tobytes())
    if img.mode == "P":
        digest.update(bytes(img.getpalette() or []))
    return (img.height, img.width), kind, digest.hexdigest()


def check_folder(path: str | os.PathLike, workers: int | None = None) -> dict[str, Any]:
    """Inspect every file of an image folder; returns a JSON-ready report (see `format_check`)."""
    layout = scan(path)
    files = layout.files()
    results = map_in_threads(_inspect, [p for _, _, p in files], workers, None)
    infos = [_Info(layout.rel(p), split, label, *(r if isinstance(r, tuple) else (None, r, None)))
             for (split, label, p), r in zip(files, results)]
    good = [i for i in infos if i.digest]
    bad = [{"path": i.rel, "reason": i.kind} for i in infos if not i.digest] + [b.to_dict() for b in layout.skipped]
    names = layout.class_names
    counts = {split: {name: sum(1 for i in good if i.split == split and names[i.label] == name) for name in classes}
              for split, classes in layout.splits.items()}
    train_counts = [counts["train"].get(name, 0) for name in names]
    ratio = imbalance_ratio(train_counts)
    report: dict[str, Any] = {
        "root": str(layout.root), "layout": "splits" if layout.split_folders else "classes",
        "split_folders": dict(layout.split_folders), "classes": list(names), "counts": counts,
        "images": len(good), "bad_files": sorted(bad, key=lambda b: b["path"]),
        "imbalance": {"ratio": round(ratio, 3), "threshold": IMBALANCE_THRESHOLD,
                      "largest": names[int(np.argmax(train_counts))], "smallest": names[int(np.argmin(train_counts))],
                      "class_weights": dict(zip(names, class_weights(train_counts))),
                      "train_uses_weights": ratio > IMBALANCE_THRESHOLD},
        "sizes": _size_stats([i.size for i in good if i.size]),
        "channels": dict(Counter(i.kind for i in good).most_common()),
        "duplicates": _duplicates(good, names),
    }
    report["suggestions"] = _suggestions(report)
    return report


def _size_stats(sizes: list[tuple[int, int]]) -> dict[str, Any]:
    if not sizes:
        return {}
    hs, ws = [s[0] for s in sizes], [s[1] for s in sizes]
    aspects = [w / h for h, w in sizes]
    train_size = default_image_size(sizes)
    train_aspect = train_size[1] / train_size[0]
    return {"height": {"min": min(hs), "median": statistics.median(hs), "max": max(hs)},
            "width": {"min": min(ws), "median": statistics.median(ws), "max": max(ws)},
            "aspect_w_over_h": {"min": round(min(aspects), 3), "median": round(statistics.median(aspects), 3),
                                "max": round(max(aspects), 3)},
            "distinct_sizes": len(set(sizes)),
            "most_common": [{"size": f"{h}x{w}", "images": n} for (h, w), n in Counter(sizes).most_common(3)],
            "train_size": f"{train_size[0]}x{train_size[1]}",
            "upscaled": sum(1 for h, w in sizes if h < train_size[0] or w < train_size[1]),
            "stretched": sum(1 for a in aspects if abs(np.log(a / train_aspect)) > np.log(1.25))}


def _duplicates(good: list[_Info], names: tuple[str, ...]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[_Info]] = defaultdict(list)
    for info in good:
        groups[info.digest].append(info)  # type: ignore[index]
    out: dict[str, list[dict[str, Any]]] = {"within_class": [], "across_classes": [], "across_splits": []}
    for members in groups.values():
        if len(members) < 2:
            continue
        files = [{"path": m.rel, "split": m.split, "class": names[m.label]} for m in members]
        labels = sorted({names[m.label] for m in members})
        splits = sorted({m.split for m in members}, key=["train", "val", "test"].index)
        if len(labels) > 1:
            out["across_classes"].append({"files": files, "fix": (
                f"one picture is filed under {' and '.join(labels)}: decide which class is right and delete the "
                "other copies (or all of them if it fits none)")})
        if len(splits) > 1:
            held = [m.rel for m in members if m.split != "train"]
            out["across_splits"].append({"files": files, "fix": (
                f"leakage: the same picture is in {' and '.join(s + '/' for s in splits)}; delete "
                f"{', '.join(held)} so the evaluation measures pictures the model has not seen")})
        if len(labels) == 1 and len(splits) == 1:
            keep = min(members, key=_copy_rank)
            out["within_class"].append({"files": files, "fix": (
                f"keep {keep.rel} and delete {', '.join(m.rel for m in members if m is not keep)}: copies count twice in "
                "training, and a random holdout can put one copy in training and another in evaluation")})
    return out


def _copy_rank(member: Any) -> tuple[int, int, str]:
    """Sort key that puts the original first: names like `copy-of-x.png`, `x (1).png`, `x_copy.png` last."""
    stem = Path(member.rel).stem.lower()
    looks_copied = "copy" in stem or (stem.endswith(")") and " (" in stem)
    return (int(looks_copied), len(stem), member.rel)


def _suggestions(r: dict[str, Any]) -> list[str]:
    tips = []
    if r["bad_files"]:
        tips.append(f"{len(r['bad_files'])} file(s) cannot be used and will be skipped: delete or replace them")
    imb = r["imbalance"]
    if imb["train_uses_weights"]:
        tips.append(f"classes are imbalanced ({imb['largest']} has {imb['ratio']:.1f}x the images of "
                    f"{imb['smallest']}): `cnnlab train` will weight the loss by the class weights above "
                    "(--class-weight none to turn that off); more images of the small classes help most")
    dups = r["duplicates"]
    for key, text in (("within_class", "exact duplicates within a class"), ("across_classes", "pictures with two labels"),
                      ("across_splits", "pictures in more than one split (leakage)")):
        if dups[key]:
            tips.append(f"{len(dups[key])} group(s) of {text}: see each group's fix")
    sizes = r["sizes"]
    if sizes and sizes["stretched"]:
        tips.append(f"{sizes['stretched']} image(s) have an aspect ratio far from the training size "
                    f"{sizes['train_size']} and will be stretched: crop them, or choose --image-size to match")
    if sizes and sizes["upscaled"]:
        tips.append(f"{sizes['upscaled']} image(s) are smaller than the training size {sizes['train_size']} "
                    "and will be enlarged (blurred)")
    kinds = set(r["channels"])
    if len(kinds) > 1 and not kinds <= {"grayscale", "grayscale+alpha"}:
        tips.append(f"mixed channel types ({', '.join(kinds)}): training converts all to rgb unless every image is "
                    "gray (--color grayscale or rgb to choose); transparency is put on white")
    return tips or ["no problems found"]


def format_check(r: dict[str, Any]) -> str:
    """The report of `check_folder` as text for a terminal."""
    out = [f"{r['root']}: {r['images']:,} usable images, {len(r['classes'])} classes, "
           + ("split folders " + ", ".join(r["split_folders"].values()) if r["split_folders"] else "one subfolder per class")]
    for split, counts in r["counts"].items():
        label = r["split_folders"][split] if r["split_folders"] else "images:"
        out.append(f"  {label:<7} " + ", ".join(f"{name} {n:,}" for name, n in counts.items()))
    imb = r["imbalance"]
    out.append(f"imbalance: largest/smallest class = {imb['ratio']:.2f} (threshold {imb['threshold']}); "
               + ("train WILL use class weights " if imb["train_uses_weights"] else "class weights (not needed) ")
               + ", ".join(f"{k} {v:g}" for k, v in imb["class_weights"].items()))
    s = r["sizes"]
    if s:
        out.append(f"sizes (HxW): height {s['height']['min']}-{s['height']['max']} (median {s['height']['median']:g}), "
                   f"width {s['width']['min']}-{s['width']['max']} (median {s['width']['median']:g}), "
                   f"{s['distinct_sizes']} distinct; aspect w/h {s['aspect_w_over_h']['min']}-{s['aspect_w_over_h']['max']}; "
                   f"train would use {s['train_size']}")
    out.append("channels: " + ", ".join(f"{k} {v:,}" for k, v in r["channels"].items()))
    if r["bad_files"]:
        out.append(f"unusable files ({len(r['bad_files'])}):")
        out += [f"  {b['path']}: {b['reason']}" for b in r["bad_files"]]
    for key, title in (("within_class", "duplicates within a class"), ("across_classes", "duplicates across classes"),
                       ("across_splits", "duplicates across splits (leakage)")):
        groups = r["duplicates"][key]
        if groups:
            out.append(f"{title} ({len(groups)} group{'s' * (len(groups) != 1)}):")
            for g in groups:
                out.append("  " + ", ".join(f["path"] for f in g["files"]))
                out.append(f"    fix: {g['fix']}")
    out.append("suggestions:")
    out += [f"  - {tip}" for tip in r["suggestions"]]
    return "\n".join(out)
