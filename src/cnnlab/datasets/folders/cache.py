"""The caches of an image folder: decoded images, one .npz per folder and options.

A cache must prove that it matches the files on disk before it answers. Each entry is keyed by every
file's path, size, mtime_ns, ctime_ns and inode (`file_stamp`). Why these and not a content digest:
a digest would read every byte of every image on each run (minutes for a large photo folder, the very
work the cache saves), while the stat fields cost one `stat` a file and still catch every change a
user or a tool can make. mtime alone does not: `cp -p`, `rsync -t`, `touch -r` or `os.utime` put an old
mtime back on new content, and a swap of two files by renaming keeps both names, sizes and mtimes.
The ctime cannot be set back (the kernel stamps it on every write, rename, chmod or link), and the
inode changes when a file is replaced by another one; so new content under an old name always gives
a new key. The cost of the choice: a folder copied or restored elsewhere (new inodes) is decoded again.
One gap remains: the kernel stamps times at its clock tick (a few ms; 2 s on FAT), so a file rewritten
within the tick of its previous change keeps all four. Such "racy" files (changed less than `RACY_NS`
before the key was taken, as git calls them) are also hashed (SHA-256) when the key is taken, and an
entry written with them keeps their digests in a `NAME.racy` beside it: a read checks those files'
contents, and once they are old enough to be safe the list is dropped. Only the newest files are read.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cnnlab.datasets.download import cache_dir
from cnnlab.datasets.folders.scan import Layout
from cnnlab.fsutil import RACY_NS, atomic_path, atomic_write_text, file_sha256

CACHE_VERSION = 3  # 2: JPEGs decoded at a reduced scale where the model input allows; 3: ctime and inode in the key
_DAMAGED = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)  # np.load of a broken .npz
_racy_at_key: dict[str, dict[str, str]] = {}  # entry name -> {racy file: SHA-256} when its key was taken
_unwritable: set[str] = set()  # cache folders already reported as unwritable in this process (one note each)


def file_stamp(path: Path) -> str:
    """What a cache entry keys a file on: size, mtime_ns, ctime_ns and inode (see the module's docstring)."""
    try:
        st = path.stat()
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_dev}:{st.st_ino}"


def _changed_ns(path: Path) -> int:
    try:
        st = path.stat()
    except OSError:
        return 0
    return max(st.st_mtime_ns, st.st_ctime_ns)


def _digest(path: Path) -> str:
    return file_sha256(path) or "missing"


def cache_file(layout: Layout, files: list[tuple[str, int, Path]], options: dict[str, Any]) -> Path:
    """The cache entry for these files (split, class index, path) of `layout`, decoded with `options`."""
    key = hashlib.sha256(json.dumps({"version": CACHE_VERSION, "root": str(layout.root), "options": options,
                                     "classes": layout.class_names}, sort_keys=True).encode("utf-8", "surrogateescape"))
    racy: dict[str, str] = {}
    since = time.time_ns() - RACY_NS
    for split, label, path in files:
        # os.fsencode: a POSIX file name may hold bytes that are not UTF-8 (surrogate-escaped in the str)
        key.update(f"{split}\0{label}\0".encode() + os.fsencode(layout.rel(path)) + f"\0{file_stamp(path)}\n".encode())
        if _changed_ns(path) >= since:
            racy[str(path)] = _digest(path)
    # One entry per folder and options: a new entry replaces the one for the same prefix (see write_arrays).
    prefix = hashlib.sha256(json.dumps([str(layout.root), options], sort_keys=True)
                            .encode("utf-8", "surrogateescape")).hexdigest()[:12]
    name = "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in layout.root.name[:40])
    stem = f"{name}-{prefix}-{key.hexdigest()[:16]}"
    _racy_at_key[stem] = racy
    while len(_racy_at_key) > 32:  # only the entries about to be written need theirs
        del _racy_at_key[next(iter(_racy_at_key))]
    return cache_dir() / "folders" / f"{stem}.npz"


def _racy_file(path: Path) -> Path:
    """Named so that no glob for entries (`*.npz`, the streamed copies' `.npy` and `.json`) takes it for one."""
    return path.with_name(f"{path.name}.racy")  # JSON inside


def fresh(path: Path) -> bool:
    """Whether the racy files an entry was written with (if any) still hold the content it was made from; the
    list is removed once every one of them is older than `RACY_NS` (a later change would change the key)."""
    sidecar = _racy_file(path)
    try:
        racy = json.loads(sidecar.read_text())
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return False
    if not isinstance(racy, dict) or any(_digest(Path(p)) != d for p, d in racy.items()):
        return False
    if all(_changed_ns(Path(p)) < time.time_ns() - RACY_NS for p in racy):
        sidecar.unlink(missing_ok=True)
    return True


def note_racy(path: Path) -> None:
    """Before an entry is written: keep the digests of the racy files its key was taken with (see `fresh`)."""
    racy = _racy_at_key.get(path.name.split(".", 1)[0].split("~", 1)[0])  # a streamed copy adds ~hHOLDOUT~sSEED
    if racy:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(_racy_file(path), json.dumps(racy))
    else:
        _racy_file(path).unlink(missing_ok=True)


def drop_orphans(path: Path) -> None:
    """Remove the racy lists of this folder and options whose entry is gone (replaced by `path`). (One of another
    process whose entry is a few ms from its rename could go too; that entry would then be trusted on its stamps.)"""
    prefix = path.name.split(".", 1)[0].split("~", 1)[0].rsplit("-", 1)[0] + "-"
    for side in path.parent.glob(f"{glob.escape(prefix)}*.racy"):
        try:
            if not side.with_name(side.name[:-len(".racy")]).exists():
                side.unlink(missing_ok=True)
        except OSError:
            pass


def read_arrays(path: Path, note: Callable[[str], None] | None = None) -> dict[str, np.ndarray] | None:
    """Every array of a cache entry; None when there is none, or when it is damaged (said through `note`)."""
    if not path.exists():
        return None
    if not fresh(path):
        return None  # a file changed within the clock tick of its previous change: its stamps could not tell
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except _DAMAGED as exc:
        if note:
            note(f"the cache file {path} is damaged ({_short(exc)}): decoding again")
        return None


def write_arrays(path: Path, arrays: dict[str, np.ndarray], note: Callable[[str], None] | None = None) -> bool:
    """Write a cache entry atomically and remove the older entries for the same folder and options (the
    same name up to the key), so the cache stays bounded. False when it cannot be written: a full or
    read-only cache folder costs the next run a fresh decode, said once through `note`, never an error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        note_racy(path)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        _prune(path)
        return True
    except OSError as exc:
        folder = str(path.parent)
        if note and folder not in _unwritable:
            note(f"the cache folder {folder} cannot be written ({_short(exc)}): continuing without caching")
        _unwritable.add(folder)
        return False


def _prune(path: Path) -> None:
    """Remove the entries of the same folder and options under older keys: `NAME-PREFIX-*<suffixes>`."""
    stem, suffixes = path.name.split(".", 1)
    prefix = stem.rsplit("-", 1)[0] + "-"
    for old in path.parent.glob(f"{glob.escape(prefix)}*.{glob.escape(suffixes)}"):
        if old != path and old.name.split(".", 1)[1] == suffixes:  # a.npz never prunes a.features.npz
            old.unlink(missing_ok=True)
            _racy_file(old).unlink(missing_ok=True)
    drop_orphans(path)


def read_cache(path: Path, note: Callable[[str], None] | None = None) -> tuple[np.ndarray, dict[str, Any]] | None:
    """(decoded images, meta) of an image cache entry; None when missing or damaged (see `read_arrays`)."""
    arrays = read_arrays(path, note)
    if arrays is None:
        return None
    try:
        return arrays["x"], json.loads(str(arrays["meta"]))
    except (KeyError, ValueError) as exc:
        if note:
            note(f"the cache file {path} is damaged ({_short(exc)}): decoding again")
        return None


def write_cache(path: Path, x: np.ndarray, meta: dict[str, Any], note: Callable[[str], None] | None = None) -> bool:
    return write_arrays(path, {"x": x, "meta": np.array(json.dumps(meta))}, note)


def _short(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:120]
