"""The image files a user names: files as given, folders walked recursively (sorted, links not followed).

Inside a folder only regular files with an image suffix count; hidden and system files (`.DS_Store`,
`__MACOSX`, ...) are ignored, and symbolic links (to files or folders) are listed as skipped rather than
followed, so a link cannot lead the walk out of the folder or round a loop. A path given by name that is a
FIFO, a device or a socket is refused: reading it could block forever or never end.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Sequence

from cnnlab.datasets.folders.scan import IMAGE_SUFFIXES, SYSTEM_FOLDERS, ignored

_SPECIAL = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
            stat.S_IFSOCK: "a socket"}


def image_paths(paths: Sequence[str | os.PathLike]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(image files in order, skipped (path, reason)); each file once. Raises FileNotFoundError for a path
    that does not exist and ValueError for one that is not a file or folder."""
    files: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for given in paths:
        path = Path(given).expanduser()
        try:
            info = path.stat()  # a link the user names is followed: they chose it
        except FileNotFoundError:
            raise FileNotFoundError(f"{str(path)!r} not found") from None
        kind = stat.S_IFMT(info.st_mode)
        if kind in _SPECIAL:
            raise ValueError(f"{path} is {_SPECIAL[kind]}, not an image file or folder")
        if stat.S_ISDIR(info.st_mode):
            real = Path(os.path.realpath(path))
            if any(real == Path(p) or Path(p) in real.parents for p in SYSTEM_FOLDERS):
                raise ValueError(f"{path} is a system folder ({', '.join(SYSTEM_FOLDERS)}), not an image folder")
            found, more = _walk(path)
            files += found
            skipped += more
        else:
            files.append(path)
    seen: set[str] = set()
    unique = []
    for f in files:
        key = os.path.abspath(f)
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, skipped


def _walk(folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    files, skipped = [], []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for d in [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            skipped.append((Path(dirpath) / d, "a symbolic link to a folder (not followed)"))
        dirnames[:] = sorted(d for d in dirnames if not ignored(d) and not os.path.islink(os.path.join(dirpath, d)))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if ignored(name) or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                info = path.lstat()
            except OSError:
                continue  # gone since the listing
            if stat.S_ISLNK(info.st_mode):
                skipped.append((path, "a symbolic link (not followed)"))
            elif not stat.S_ISREG(info.st_mode):
                skipped.append((path, "not a regular file"))
            else:
                files.append(path)
    return files, skipped
