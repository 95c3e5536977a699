"""Folder caches that cannot lie: keyed on what is on disk, damaged or unwritable caches only cost a decode."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.datasets.folders import cache as folder_cache
from cnnlab.datasets.folders.load import load_folder


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr(folder_cache, "_unwritable", set(), raising=False)


def _two_classes(root: Path, n: int = 4) -> None:
    """red/ holds red images, blue/ blue ones; BMPs, so every file has the same size."""
    for cls, rgb in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((6, 6, 3), rgb, np.uint8)).save(root / cls / f"{i}.bmp")


def _labels_match_pixels(data) -> bool:
    """Every image's colour is its class's (red: channel 0 high)."""
    x = np.concatenate([data.x_train, data.x_test])
    y = np.concatenate([data.y_train, data.y_test])
    red = [data.class_names[int(v)] == "red" for v in y]
    return all(bool(img[0, 0, 0] > 128) == r for img, r in zip(x, red))


def _swap(a: Path, b: Path, by_rename: bool) -> None:
    """Swap two files' contents keeping both names, sizes and mtimes (os.utime puts the old mtimes back)."""
    times = [(p.stat().st_atime_ns, p.stat().st_mtime_ns) for p in (a, b)]
    if by_rename:
        tmp = a.with_name("swap.tmp")
        os.replace(a, tmp)
        os.replace(b, a)
        os.replace(tmp, b)
    else:
        da, db = a.read_bytes(), b.read_bytes()
        a.write_bytes(db)
        b.write_bytes(da)
    for p, t in zip((a, b), times):
        os.utime(p, ns=t)


@pytest.mark.parametrize("by_rename", [True, False])
def test_swapped_class_contents_with_old_mtimes_are_not_read_from_the_cache(tmp_path, by_rename):
    root = tmp_path / "colours"
    _two_classes(root)
    first = load_folder(root, image_size=(6, 6), color="rgb")
    assert _labels_match_pixels(first) and load_folder(root, image_size=(6, 6), color="rgb").report.cached
    for i in range(4):
        _swap(root / "red" / f"{i}.bmp", root / "blue" / f"{i}.bmp", by_rename)
    assert all((root / c / f"{i}.bmp").stat().st_size == (root / "red" / "0.bmp").stat().st_size
               for c in ("red", "blue") for i in range(4))
    after = load_folder(root, image_size=(6, 6), color="rgb")
    assert not after.report.cached
    assert not _labels_match_pixels(after)  # the red/ folder now really holds blue images, and the data says so
    x = np.concatenate([after.x_train, after.x_test])
    y = np.concatenate([after.y_train, after.y_test])
    assert all(img[0, 0, 2] > 128 for img, label in zip(x, y) if after.class_names[int(label)] == "red")


def test_a_racy_rewrite_within_the_clock_tick_is_caught(tmp_path, monkeypatch):
    """A rewrite that keeps every stat field (as within one kernel clock tick): the content digest catches it."""
    root = tmp_path / "colours"
    _two_classes(root, 2)
    load_folder(root, image_size=(6, 6), color="rgb")
    a, b = root / "red" / "0.bmp", root / "blue" / "0.bmp"
    stamps = {p: folder_cache.file_stamp(p) for p in (a, b)}
    real_stamp = folder_cache.file_stamp
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)
    monkeypatch.setattr(folder_cache, "file_stamp", lambda p: stamps.get(p) or real_stamp(p))  # stat says: unchanged
    after = load_folder(root, image_size=(6, 6), color="rgb")
    assert not after.report.cached and not _labels_match_pixels(after)


def test_old_racy_list_is_dropped_once_files_are_old(tmp_path, monkeypatch):
    root = tmp_path / "colours"
    _two_classes(root, 2)
    first = load_folder(root, image_size=(6, 6), color="rgb")
    cache = Path(first.report.cache_file)
    sidecar = cache.with_name(f"{cache.name}.racy")
    assert sidecar.exists()  # the files were just written: their digests are kept
    monkeypatch.setattr(folder_cache, "RACY_NS", 0)
    assert load_folder(root, image_size=(6, 6), color="rgb").report.cached
    assert not sidecar.exists()
    assert load_folder(root, image_size=(6, 6), color="rgb").report.cached


def test_non_utf8_file_name_does_not_stop_the_load(tmp_path):
    root = tmp_path / "colours"
    _two_classes(root)
    odd = os.path.join(os.fsencode(root / "red"), b"caf\xe9.bmp")
    Image.fromarray(np.full((6, 6, 3), (255, 0, 0), np.uint8)).save(odd)
    first = load_folder(root, image_size=(6, 6), color="rgb")
    assert sum(first.report.counts["train"].values()) == 9 and _labels_match_pixels(first)
    assert load_folder(root, image_size=(6, 6), color="rgb").report.cached


@pytest.mark.parametrize("damage", ["truncate", "not_a_zip", "bad_crc"])
def test_damaged_cache_is_decoded_again_with_a_note(tmp_path, damage):
    root = tmp_path / "colours"
    _two_classes(root)
    path = Path(load_folder(root, image_size=(6, 6), color="rgb").report.cache_file)
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "not_a_zip":
        path.write_bytes(b"garbage" * 10)
    else:  # flip a byte inside the stored x array: the zip's CRC-32 no longer matches
        at = raw.index(b"x.npy") + 200
        raw[at] ^= 0xFF
        path.write_bytes(bytes(raw))
    again = load_folder(root, image_size=(6, 6), color="rgb")
    assert not again.report.cached and _labels_match_pixels(again)
    notes = [line for line in again.report.lines() if "note:" in line]
    assert len(notes) == 1 and "damaged" in notes[0] and str(path) in notes[0]
    assert load_folder(root, image_size=(6, 6), color="rgb").report.cached  # rewritten


def test_full_cache_folder_costs_a_note_not_the_load(tmp_path, monkeypatch):
    root = tmp_path / "colours"
    _two_classes(root)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(folder_cache.np, "savez", full)
    first = load_folder(root, image_size=(6, 6), color="rgb")
    assert _labels_match_pixels(first) and first.report.cache_file is None
    assert any("cannot be written (No space left on device)" in line for line in first.report.lines())
    second = load_folder(root, image_size=(6, 6), color="rgb", seed=1)
    assert not any("note:" in line for line in second.report.lines())  # said once
    assert not list((tmp_path / "cache" / "folders").glob("*.tmp")) and not list(
        (tmp_path / "cache" / "folders").glob(".*.tmp"))


def test_old_feature_caches_are_pruned(tmp_path):
    folder = tmp_path / "c"
    images = folder / "f-abc-1.npz"
    folder_cache.write_arrays(images, {"x": np.zeros(2)})
    for key in ("1", "2", "3"):
        folder_cache.write_arrays(folder / f"f-abc-{key}.features.npz", {"train": np.zeros(2)})
    assert sorted(p.name for p in folder.iterdir()) == ["f-abc-1.npz", "f-abc-3.features.npz"]


def test_streamed_copy_is_checked_like_the_in_memory_cache(tmp_path):
    root = tmp_path / "colours"
    _two_classes(root)
    first = load_folder(root, image_size=(6, 6), color="rgb", stream=True)
    cache = Path(first.report.cache_file)
    assert cache.with_name(f"{cache.name}.racy").exists()  # the files are new: their digests kept
    assert load_folder(root, image_size=(6, 6), color="rgb", stream=True).report.cached
    for i in range(4):
        _swap(root / "red" / f"{i}.bmp", root / "blue" / f"{i}.bmp", by_rename=False)
    after = load_folder(root, image_size=(6, 6), color="rgb", stream=True)
    assert not after.report.cached and not _labels_match_pixels(after)


def test_non_utf8_file_name_in_image_dataset_from_directory(tmp_path):
    from cnnlab.utils import image_dataset_from_directory
    root = tmp_path / "colours"
    _two_classes(root)
    Image.fromarray(np.full((6, 6, 3), (255, 0, 0), np.uint8)).save(os.path.join(os.fsencode(root / "red"), b"\xff.bmp"))
    data = image_dataset_from_directory(root, image_size=(6, 6), batch_size=None, verbose=False)
    assert len(data.file_paths) == 9


@pytest.mark.parametrize("how", ["full", "read-only"])
def test_real_full_or_read_only_cache_folder(tmp_path, monkeypatch, how):
    """A 16 KiB tmpfs as the cache folder (root only; skipped elsewhere): the load goes on, with one note."""
    import subprocess
    mount = tmp_path / "tiny"
    mount.mkdir()
    options = "size=16k" + (",ro" if how == "read-only" else "")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        monkeypatch.setenv("CNNLAB_DATA", str(mount))
        root = tmp_path / "colours"
        _two_classes(root, 40)  # 80 images of 6x6x3: more than 16 KiB decoded
        data = load_folder(root, image_size=(6, 6), color="rgb")
        notes = [line for line in data.report.lines() if "note:" in line]
        wanted = "No space left on device" if how == "full" else "Read-only file system"
        assert _labels_match_pixels(data) and len(notes) == 1 and wanted in notes[0], notes
        assert not any(p.name.endswith(".tmp") for p in mount.rglob("*"))
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)
