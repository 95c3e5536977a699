"""Find the classes, splits and image files of an image folder (class-per-subfolder, optionally split).

Two layouts are recognised:

    pets/cat/*.jpg, pets/dog/*.jpg                     one subfolder per class
    pets/train/cat/..., pets/val/cat/..., pets/test/...  split folders holding the same class folders

`val`, `valid` and `validation` all mean the validation split. Class folders may hold subfolders.
Hidden files and folders, `__MACOSX`, `.DS_Store`, `Thumbs.db` and `desktop.ini` are ignored.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cnnlab.printable import printable

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "testing": "test"}
SYSTEM_FOLDERS = ("/proc", "/sys", "/dev")  # virtual files: endless, or blocking when read
IGNORED_NAMES = frozenset({"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini", "@eaDir"})


@dataclass(frozen=True)
class BadFile:
    """A file that was skipped, relative to the dataset folder, and why."""
    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


@dataclass(frozen=True)
class Layout:
    """split -> class name -> image files (sorted); `skipped` are files that are not image types."""
    root: Path
    splits: dict[str, dict[str, tuple[Path, ...]]]
    class_names: tuple[str, ...]
    split_folders: dict[str, str]  # split -> folder name as found ("valid/"), empty for a class-per-folder tree
    skipped: tuple[BadFile, ...]

    def files(self) -> list[tuple[str, int, Path]]:
        """(split, class index, path) for every candidate image, in a fixed order."""
        index = {name: i for i, name in enumerate(self.class_names)}
        return [(split, index[name], path) for split, classes in self.splits.items()
                for name, paths in classes.items() for path in paths]

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


def ignored(name: str) -> bool:
    return name.startswith(".") or name in IGNORED_NAMES


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not ignored(p.name))


def scan(root: str | os.PathLike, *, follow_links: bool = False) -> Layout:
    """The layout of an image folder; ValueError naming the folder when it is not one cnnlab can read.

    As Keras (`follow_links=False`), symlinked folders are not entered unless `follow_links`; when they
    are, never one that leads back to a folder above it (a loop), and each real file counts once.
    Only regular files are candidates (no devices, FIFOs or sockets).
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} not found")
    if any(root == Path(p) or Path(p) in root.parents for p in SYSTEM_FOLDERS):
        raise ValueError(f"{root} is a system folder ({', '.join(SYSTEM_FOLDERS)}), not an image folder")
    top = _subfolders(root)
    if not top:
        raise ValueError(f"{root} has no subfolders: put each class's images in its own subfolder "
                         "(e.g. hotdog/ and not_hotdog/), or use train/ and val/ or test/ split folders")
    splits_found = {p: SPLIT_ALIASES[p.name.lower()] for p in top if p.name.lower() in SPLIT_ALIASES}
    if not splits_found:
        classes, skipped = _classes(root, root, follow_links)
        return Layout(root, {"train": classes}, tuple(classes), {}, tuple(skipped))

    others = [p.name for p in top if p not in splits_found]
    if "train" not in splits_found.values():
        found = ", ".join(f"{p.name}/" for p in splits_found)
        raise ValueError(f"{root} has {found} but no train/ folder: split folders need train/ plus val/, valid/ "
                         "or test/; or drop the split folders and put one subfolder per class")
    if others:
        raise ValueError(f"{root} mixes split folders ({', '.join(p.name + '/' for p in splits_found)}) with other "
                         f"folders ({', '.join(o + '/' for o in others)}): move class folders inside train/")
    seen: dict[str, Path] = {}
    for folder, split in splits_found.items():
        if split in seen:
            raise ValueError(f"{root} has both {seen[split].name}/ and {folder.name}/, which both mean the {split} "
                             "split: merge them or rename one")
        seen[split] = folder
    splits: dict[str, dict[str, tuple[Path, ...]]] = {}
    skipped: list[BadFile] = []
    for split in ("train", "val", "test"):
        if split in seen:
            splits[split], more = _classes(seen[split], root, follow_links)
            skipped += more
    names = tuple(splits["train"])
    for split, classes in splits.items():
        stray = [name for name in classes if name not in names]
        if stray:
            raise ValueError(f"{seen[split].name}/{stray[0]}/ is a class that train/ does not have "
                             f"(train/ classes: {', '.join(names)}); the splits must use the same class folders")
    return Layout(root, splits, names, {split: f"{folder.name}/" for split, folder in seen.items()}, tuple(skipped))


def _classes(folder: Path, root: Path, follow_links: bool = False
             ) -> tuple[dict[str, tuple[Path, ...]], list[BadFile]]:
    classes, skipped = {}, []
    seen_files: set[tuple[int, int]] = set()  # (device, inode): a file reached twice through links counts once
    subfolders = _subfolders(folder)
    if not subfolders:
        raise ValueError(f"{folder} has no class subfolders: put each class's images in its own subfolder")
    for sub in subfolders:
        files = []
        for dirpath, dirnames, filenames in os.walk(sub, followlinks=follow_links):
            here = os.path.realpath(dirpath)
            dirnames[:] = sorted(d for d in dirnames if not ignored(d) and not _loops(os.path.join(dirpath, d), here))
            for name in sorted(filenames):
                if ignored(name):
                    continue
                path = Path(dirpath) / name
                try:
                    info = path.stat()
                except OSError:
                    skipped.append(BadFile(path.relative_to(root).as_posix(), "cannot be read (a broken link?)"))
                    continue
                if not stat.S_ISREG(info.st_mode):
                    skipped.append(BadFile(path.relative_to(root).as_posix(), "not a regular file"))
                    continue
                if (info.st_dev, info.st_ino) in seen_files:
                    continue
                seen_files.add((info.st_dev, info.st_ino))
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    files.append(path)
                else:
                    skipped.append(BadFile(path.relative_to(root).as_posix(),
                                           f"not an image file type ({path.suffix or 'no suffix'}); "
                                           f"cnnlab reads {' '.join(IMAGE_SUFFIXES)}"))
        # The class name is the folder's name with control characters and undecodable bytes escaped: it is shown
        # in terminals, plots and the web page and kept in the model file (cnnlab.printable says why).
        name = printable(sub.name)
        if name in classes:
            raise ValueError(f"{folder} has two class folders that both read {name!r} once their control "
                             "characters are escaped: rename one")
        classes[name] = tuple(files)
    return classes, skipped


def _loops(path: str, parent_real: str) -> bool:
    """A symlinked folder that leads to the folder holding it or to one of its ancestors."""
    if not os.path.islink(path):
        return False
    target = os.path.realpath(path)
    return parent_real == target or parent_real.startswith(target.rstrip(os.sep) + os.sep)
