"""Relabel, remove and undo in an image folder (cnnlab.datasets.folders.curate): files move, never vanish; undo
restores the same bytes at the same paths; every change is in the journal; the scan no longer sees a removed file."""
from __future__ import annotations

import hashlib

import pytest

from cnnlab.datasets.folders import curate
from cnnlab.datasets.folders.scan import scan


def _tree(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file() and curate.JOURNAL not in p.name}


def test_relabel_remove_and_undo_restore_the_exact_files(tmp_path):
    root = tmp_path / "photos"
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            (root / split / cls / f"{cls}-{split}.jpg").write_bytes(f"{cls} {split}".encode() * 50)
    before = _tree(root)
    moved = curate.relabel(root, "train/cat/cat-train.jpg", "dog")
    assert moved["to"] == "train/dog/cat-train.jpg" and (root / moved["to"]).exists()
    gone = curate.remove(root, "test/dog/dog-test.jpg")
    assert (root / curate.TRASH / "test/dog/dog-test.jpg").exists()
    layout = scan(root)
    assert [p.name for p in layout.splits["test"]["dog"]] == [] and len(layout.files()) == 3
    with pytest.raises(FileExistsError):  # never onto another file
        (root / "train/cat/cat-train.jpg").write_bytes(b"new")
        curate.undo(root, moved["id"])
    (root / "train/cat/cat-train.jpg").unlink()
    curate.undo(root, moved["id"])
    curate.undo(root, gone["id"])
    assert _tree(root) == before
    actions = [(e["id"], e["action"], e.get("undoes")) for e in curate.journal(root)]
    assert actions == [(1, "relabel", None), (2, "remove", None), (3, "undo", 1), (4, "undo", 2)]
    with pytest.raises(ValueError, match="undone already"):
        curate.undo(root, 1)
    for bad in ("../outside.jpg", ".cnnlab-trash/x.jpg", "train/.hidden/x.jpg"):
        with pytest.raises(ValueError):
            curate.remove(root, bad)
    with pytest.raises(ValueError, match="not a class folder"):
        curate.relabel(root, "train/cat/cat-train.jpg", "horse")
