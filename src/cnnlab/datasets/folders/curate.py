"""Fix an image folder by moving files, never deleting them: relabel (to another class folder), remove (to a
trash folder inside the repository) and undo, each change appended to a journal in the folder.

The trash (`.cnnlab-trash/`) and the journal (`.cnnlab-journal.jsonl`) start with a dot, so the folder scan
ignores them and training never sees a removed file. A move is one `os.rename` within the folder (atomic,
the same bytes, the same inode); it refuses to replace a file that is already at the target. Each journal
line is written whole in one append, so the journal survives a crash between changes.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

TRASH = ".cnnlab-trash"
JOURNAL = ".cnnlab-journal.jsonl"
_lock = threading.Lock()  # one change at a time per process: the journal's numbering stays in order


def inside(root: Path, rel: str) -> Path:
    """root/rel, refusing paths that leave the folder or name its trash or journal."""
    path = (root / rel).resolve()
    if root.resolve() not in path.parents or rel.startswith((TRASH, JOURNAL)) or "/." in f"/{rel}":
        raise ValueError(f"{rel!r} is not an image path inside {root}")
    return path


def journal(root: Path) -> list[dict[str, Any]]:
    """Every change so far, oldest first (a torn last line, from a crash mid-write, is left out)."""
    path = root / JOURNAL
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _move(root: Path, source_rel: str, target_rel: str, entry: dict[str, Any]) -> dict[str, Any]:
    source, target = root / source_rel, root / target_rel
    if not source.is_file():
        raise FileNotFoundError(f"{source_rel} is not in {root} (moved already?)")
    if os.path.lexists(target):
        raise FileExistsError(f"{target_rel} already exists; nothing was moved")
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(source, target)
    entry = {"id": len(journal(root)) + 1, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "from": source_rel, "to": target_rel, **entry}
    fd = os.open(root / JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, (json.dumps(entry) + "\n").encode("utf-8"))
    finally:
        os.close(fd)
    return entry


def relabel(root: str | os.PathLike, rel: str, new_class: str) -> dict[str, Any]:
    """Move `rel` (split/class/file or class/file) into the `new_class` folder beside its own."""
    root = Path(root)
    inside(root, rel)
    parts = rel.split("/")
    if len(parts) < 2 or not new_class or "/" in new_class or new_class.startswith("."):
        raise ValueError(f"cannot relabel {rel!r} as {new_class!r}")
    from cnnlab.datasets.folders.scan import scan
    class_at = 1 if scan(root).split_folders else 0  # split/class/... or class/...
    if len(parts) < class_at + 2 or not (root / "/".join(parts[:class_at] + [new_class])).is_dir():
        raise ValueError(f"{new_class!r} is not a class folder beside {'/'.join(parts[:class_at + 1])}")
    target = "/".join(parts[:class_at] + [new_class] + parts[class_at + 1:])
    with _lock:
        return _move(root, rel, target, {"action": "relabel", "label": parts[class_at], "new_label": new_class})


def remove(root: str | os.PathLike, rel: str) -> dict[str, Any]:
    """Move `rel` into the trash folder, keeping its path there."""
    root = Path(root)
    inside(root, rel)
    with _lock:
        return _move(root, rel, f"{TRASH}/{rel}", {"action": "remove"})


def undo(root: str | os.PathLike, change_id: int) -> dict[str, Any]:
    """Move the file of change `change_id` back where it was (itself a journal entry, action "undo")."""
    root = Path(root)
    with _lock:
        entries = journal(root)
        change = next((e for e in entries if e.get("id") == change_id and e.get("action") != "undo"), None)
        if change is None:
            raise ValueError(f"no change {change_id} to undo in {root / JOURNAL}")
        if any(e.get("action") == "undo" and e.get("undoes") == change_id for e in entries):
            raise ValueError(f"change {change_id} was undone already")
        return _move(root, change["to"], change["from"], {"action": "undo", "undoes": change_id})
