"""`data check`'s embedding audit on a real collection with planted faults: recall and precision of each.

    python bench/audit_planted.py SOURCE WORK [--dups 40] [--flips 40] [--seed 0] [--plant-only]

Copies SOURCE (an image folder) to WORK, then plants faults there and writes WORK.faults.json beside it:
near-duplicates (a copy of a photo resized to 60%, recompressed as JPEG quality 30, mirrored, or with 8%
cut off each side, cycling), placed in the same class, in another split or in another class; and flipped
labels (a photo moved to another class folder of its split). Then runs the audit (`audit_folder`) and
prints, for each fault kind, how many were found (recall) and what share of the reports were planted
(precision). The collection's own near-duplicates and label errors count against precision; a list of the
unplanted reports is printed so that a person can judge them.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

from PIL import Image, ImageOps

from cnnlab.datasets.image_files import open_image

VARIANTS = ("resized", "recompressed", "mirrored", "cropped")


def variant(img: Image.Image, kind: str) -> Image.Image:
    img = img.convert("RGB")
    if kind == "resized":
        return img.resize((max(1, int(img.width * 0.6)), max(1, int(img.height * 0.6))), Image.Resampling.BILINEAR)
    if kind == "mirrored":
        return ImageOps.mirror(img)
    if kind == "cropped":
        dx, dy = int(img.width * 0.08), int(img.height * 0.08)
        return img.crop((dx, dy, img.width - dx, img.height - dy))
    return img  # recompressed: saved at quality 30 below


def plant(source: Path, work: Path, dups: int, flips: int, seed: int) -> dict:
    if work.exists():
        raise SystemExit(f"{work} exists; choose a new folder")
    shutil.copytree(source, work, ignore=shutil.ignore_patterns(".*"))
    rng = random.Random(seed)
    splits = sorted(p for p in work.iterdir() if p.is_dir())
    files = sorted(p for s in splits for p in s.rglob("*") if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    rng.shuffle(files)
    chosen, flipped = files[:dups], files[dups:dups + flips]
    planted = {"near_duplicates": [], "flipped_labels": []}
    for i, path in enumerate(chosen):
        kind, place = VARIANTS[i % 4], ("same_class", "other_split", "other_class")[i % 3]
        split, cls = path.parent.parent, path.parent.name
        if place == "other_split":
            split = rng.choice([s for s in splits if s != split])
        if place == "other_class":
            cls = rng.choice([c.name for c in split.iterdir() if c.is_dir() and c.name != cls])
        target = split / cls / f"planted-{kind}-{i}.jpg"
        variant(open_image(path), kind).save(target, quality=30 if kind == "recompressed" else 90)
        planted["near_duplicates"].append({"original": str(path), "copy": str(target), "kind": kind, "place": place})
    for path in flipped:
        classes = [c for c in path.parent.parent.iterdir() if c.is_dir() and c.name != path.parent.name]
        target = rng.choice(sorted(classes)) / path.name
        path.rename(target)
        planted["flipped_labels"].append({"path": str(target), "true": path.parent.name, "label": target.parent.name})
    Path(str(work) + ".faults.json").write_text(json.dumps(planted, indent=1))
    return planted


def score(report: dict, planted: dict, root: Path) -> None:
    pairs = {frozenset((d["original"], d["copy"])) for d in planted["near_duplicates"]}
    groups = [{str(root / p) for p in g["paths"]} for g in report["near_duplicates"]]
    found = sum(any(pair <= g for g in groups) for pair in pairs)
    true_groups = [g for g in groups if any(pair <= g for pair in pairs)]
    print(f"near-duplicates: found {found} of {len(pairs)} planted pairs (recall {found / max(len(pairs), 1):.0%}); "
          f"{len(true_groups)} of {len(groups)} reported groups hold a planted pair "
          f"(precision {len(true_groups) / max(len(groups), 1):.0%})")
    for g in groups:
        if g not in true_groups:
            print("  unplanted group:", ", ".join(sorted(str(Path(p).relative_to(root)) for p in g)))
    flips = {d["path"]: d["true"] for d in planted["flipped_labels"]}
    # a copy planted in another class is a label error too: its true class is its original's
    flips.update({d["copy"]: Path(d["original"]).parent.name for d in planted["near_duplicates"]
                  if d["place"] == "other_class"})
    suspects = {str(root / s["path"]): s for s in report["suspect_labels"]}
    hit = [p for p in flips if p in suspects]
    right = sum(suspects[p]["suggested"] == flips[p] for p in hit)
    print(f"label errors (flipped, or a copy filed in another class): found {len(hit)} of {len(flips)} (recall {len(hit) / max(len(flips), 1):.0%}), "
          f"the true class suggested for {right}; {len(hit)} of {len(suspects)} reports were planted "
          f"(precision {len(hit) / max(len(suspects), 1):.0%})")
    for p, s in suspects.items():
        if p not in flips:
            print(f"  unplanted suspect: {s['path']} labelled {s['label']}, suggested {s['suggested']} "
                  f"({s['confidence']:.2f})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", type=Path)
    p.add_argument("work", type=Path)
    p.add_argument("--dups", type=int, default=40)
    p.add_argument("--flips", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plant-only", action="store_true")
    a = p.parse_args(argv)
    faults = Path(str(a.work) + ".faults.json")
    planted = json.loads(faults.read_text()) if faults.exists() else plant(a.source, a.work, a.dups, a.flips, a.seed)
    if a.plant_only:
        return 0
    from cnnlab.runs.audit import audit_folder
    started = time.perf_counter()
    report = audit_folder(a.work)
    print(f"audit of {report['images']:,} images in {time.perf_counter() - started:.0f}s")
    score(report, planted, Path(report["root"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
