"""What loading an image folder found, chose and skipped: the report `load_folder` attaches to its dataset."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cnnlab.datasets.folders.scan import BadFile
from cnnlab.printable import printable

LISTED = 20  # skipped files listed with the folder report; `data check` lists them all


@dataclass(frozen=True)
class FolderReport:
    """What loading an image folder found and decided, for people and for `--json`."""
    root: str
    layout: str  # "classes" (one subfolder per class) or "splits" (train/ + val/ or test/)
    split_folders: dict[str, str]
    test_from: str  # where the evaluation images came from, in words
    image_size: tuple[int, int]
    size_note: str
    color: str
    color_note: str
    counts: dict[str, dict[str, int]]  # split -> class -> usable images
    bad_files: tuple[BadFile, ...]
    cached: bool
    cache_file: str | None
    seconds: float
    resize_to: int | None = None  # the images are centre crops after this resize of the short side (see load_folder)
    notes: tuple[str, ...] = ()  # what the caches had to say: a damaged entry decoded again, an unwritable folder

    def lines(self) -> list[str]:
        """What was found, chosen and skipped, for a terminal (names escaped: see `cnnlab.printable`)."""
        out = [f"folder {printable(self.root)}: {self.layout_text()}", f"  {self.size_note}", f"  {self.color_note}",
               f"  evaluation images: {self.test_from}"]
        for split, classes in self.counts.items():
            label = f"{self.split_folders[split]}" if self.layout == "splits" else "images per class"
            out.append(f"  {label}: " + ", ".join(f"{printable(name)} {n:,}" for name, n in classes.items()))
        how = "loaded from the cache" if self.cached else f"decoded in {self.seconds:.1f}s"
        out.append(f"  {how}" + (f" ({self.cache_file})" if self.cache_file else ""))
        out += [f"  note: {printable(n)}" for n in (*self.class_notes(), *self.notes)]
        if self.bad_files:
            out += ["  " + line for line in self.bad_files_text(LISTED).splitlines()]
        return out

    def class_notes(self) -> list[str]:
        """A class with a single image has none held out: the test split cannot say how it is recognised."""
        if self.layout != "classes":
            return []
        alone = [printable(name) for name, n in self.counts.get("train", {}).items() if n == 1]  # before the holdout
        if not alone:
            return []
        return [f"class{'es' * (len(alone) > 1)} {', '.join(alone)} ha{'ve' if len(alone) > 1 else 's'} one image "
                "only: it trains on it, none is held out, so the test accuracy says nothing about "
                f"{'them' if len(alone) > 1 else 'it'}; add images"]

    def layout_text(self) -> str:
        if self.layout == "classes":
            return "one subfolder per class"
        return "split folders " + ", ".join(f"{folder} ({split})" for split, folder in self.split_folders.items())

    def bad_files_text(self, limit: int | None = None) -> str:
        """The skipped files and why, names escaped; at most `limit` of them (the count says how many more)."""
        if not self.bad_files:
            return "no files were skipped"
        shown = self.bad_files[:limit]
        paths = [printable(b.path) for b in shown]
        width = max(len(p) for p in paths)
        more = len(self.bad_files) - len(shown)
        return "\n".join([f"skipped {len(self.bad_files)} file{'s' * (len(self.bad_files) != 1)} in "
                          f"{printable(self.root)}:"] + [f"  {p:<{width}}  {printable(b.reason)}"
                                                          for p, b in zip(paths, shown)]
                         + ([f"  ... and {more:,} more (cnnlab data check {printable(self.root)} lists them all)"]
                            if more else []))

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "layout": self.layout, "split_folders": self.split_folders,
                "test_from": self.test_from, "image_size": list(self.image_size), "color": self.color,
                "counts": self.counts, "bad_files": [b.to_dict() for b in self.bad_files], "cached": self.cached,
                **({"resize_to": self.resize_to} if self.resize_to else {})}
