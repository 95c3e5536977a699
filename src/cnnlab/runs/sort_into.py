"""`--sort-into DIR`: each image hard-linked (or copied) into DIR/<class>/; an original is never moved or
overwritten, and neither is anything already in DIR."""
from __future__ import annotations

import filecmp
import os
import re
import shutil
from pathlib import Path


def class_folder_name(name: str) -> str:
    """A class name as a safe folder name: no path separators, no leading dots, not empty."""
    safe = re.sub(r"[/\\\x00]", "_", name).strip().lstrip(".")
    return safe or "_"


def place_copy(source: Path, dest_dir: Path, copy: bool = False) -> Path:
    """Hard-link `source` into `dest_dir` (a copy when `copy`, or across file systems) under its own name,
    or name-1, name-2, ... when another file holds the name; the same file already there is reused (a rerun)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    stem, suffix = source.stem, source.suffix
    for n in range(10_000):
        target = dest_dir / (source.name if n == 0 else f"{stem}-{n}{suffix}")
        if os.path.lexists(target):
            if _same(source, target):
                return target
            continue
        if _link_or_copy(source, target, copy):
            return target
    raise OSError(f"{dest_dir} already holds 10,000 other files named like {source.name}")


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b) or (not b.is_symlink() and filecmp.cmp(a, b, shallow=False))
    except OSError:
        return False


def _link_or_copy(source: Path, target: Path, copy: bool) -> bool:
    """True when `target` now holds the image; False when another writer took the name first."""
    if not copy:
        try:
            os.link(source, target)  # fails rather than replace an existing name
            return True
        except FileExistsError:
            return False
        except OSError:
            pass  # another file system, or links not allowed: copy instead
    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    shutil.copy2(source, tmp)
    try:
        os.link(tmp, target)  # publish the whole copy under its name, never over another file
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
