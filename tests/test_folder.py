"""Image folders against the MNIST arrays they were exported from: layouts, bad files, cache, check, CLI."""
from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli import main
from cnnlab.datasets.dataset import Dataset
from cnnlab.datasets.folders.check import auto_class_weight, check_folder, class_weights
from cnnlab.datasets.folders.export import export_images, folder_names
from cnnlab.datasets.folders.load import default_image_size, load_folder, stratified_split
from cnnlab.datasets.folders.scan import scan
from cnnlab.datasets.registry import load_any


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "cache"))


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _jpeg_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, "JPEG", quality=90)
    return out.getvalue()


def _messy_tree(root: Path, mnist: Dataset) -> dict[str, str]:
    """Exported MNIST PNGs turned into mixed sizes, colour modes and formats, plus planted bad files.

    Returns the bad files that must be reported, relative path -> a word their reason must contain.
    """
    export_images(mnist, root, layout="classes", limit=150)  # 300 images, about 30 a class
    files = sorted(p for p in root.rglob("*.png"))
    for i, path in enumerate(files):
        gray = np.asarray(Image.open(path))
        variant = i % 6
        if variant == 1:  # twice the size
            Image.fromarray(gray).resize((56, 56), Image.Resampling.BICUBIC).save(path)
        elif variant == 2:
            Image.fromarray(gray).convert("RGB").save(path)
        elif variant == 3:
            Image.fromarray(gray).convert("RGBA").save(path)
        elif variant == 4:
            path.unlink()
            Image.fromarray(gray).save(path.with_suffix(".bmp"))
        elif variant == 5:
            path.unlink()
            Image.fromarray(gray).save(path.with_suffix(".webp" if i % 12 == 5 else ".gif"),
                                       **({"lossless": True} if i % 12 == 5 else {}))
    (root / "3" / "corrupt.jpg").write_bytes(_jpeg_bytes(mnist.x_train[0, ..., 0])[:300])
    (root / "5" / "empty.png").write_bytes(b"")
    (root / "7" / "notes.png").write_text("these are my notes, not a picture\n")
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "2" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "__MACOSX" / "2").mkdir(parents=True)
    (root / "__MACOSX" / "2" / "._00001.png").write_bytes(b"\0\5\26\7")
    return {"3/corrupt.jpg": "truncated", "5/empty.png": "empty", "7/notes.png": "text file"}


def test_messy_folder_trains_end_to_end_and_reports_exactly_the_bad_files(tmp_path, mnist, capsys):
    root = tmp_path / "digits"
    expected_bad = _messy_tree(root, mnist)
    data = load_folder(root)
    report = data.report
    assert {b.path: b.reason for b in report.bad_files}.keys() == expected_bad.keys()
    for b in report.bad_files:
        assert expected_bad[b.path] in b.reason
    assert data.class_names == tuple(str(d) for d in range(10))
    assert data.input_shape == (28, 28, 1) and report.color == "grayscale"  # RGB/RGBA copies are gray inside
    assert len(data.x_train) + len(data.x_test) == 300
    assert report.size_note.startswith("image size 28x28: the median size 28x28 of 300 images (from 28x28 to 56x56);")

    run = tmp_path / "run"
    assert main(["train", "--data", str(root), "--model", "mlp", "--epochs", "1", "--out", str(run), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "skipped 3 files" in out
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert sorted(listed) == sorted(expected_bad)
    assert json.loads((run / "metrics.json").read_text())["n_test"] == len(data.x_test)
    assert main(["evaluate", str(run), "--json"]) == 0  # finds the folder again from the run's config
    assert json.loads(capsys.readouterr().out)["n_test"] == len(data.x_test)


def test_exported_split_folders_read_back_exactly(tmp_path, mnist):
    root = tmp_path / "exported"
    summary = export_images(mnist, root, limit=120)
    assert summary.counts == {"train": 120, "test": 120}
    data = load_any(str(root))
    assert data.report.layout == "splits" and data.report.split_folders == {"train": "train/", "test": "test/"}
    order = np.lexsort((np.arange(120), mnist.y_test[:120]))  # test/ is read class by class, file by file
    np.testing.assert_array_equal(data.x_test, mnist.x_test[:120][order])
    np.testing.assert_array_equal(data.y_test, mnist.y_test[:120][order])
    key = lambda x, y: sorted(a.tobytes() + bytes([b]) for a, b in zip(x, y))  # noqa: E731 (train/ is shuffled)
    assert key(data.x_train, data.y_train) == key(mnist.x_train[:120], mnist.y_train[:120])
    assert data.x_val is None


def test_val_valid_and_test_folders_are_recognised(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("valid", 3), ("test", 2)):
        for cls in ("cat", "dog"):
            for i in range(n):
                _png(tmp_path / "pets" / split / cls / f"{i}.png", rng.integers(0, 255, (12, 16, 3), dtype=np.uint8))
    data = load_folder(tmp_path / "pets")
    assert data.report.split_folders == {"train": "train/", "val": "valid/", "test": "test/"}
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (12, 6, 4)
    assert data.input_shape == (12, 16, 3) and data.report.color == "rgb"
    shutil.rmtree(tmp_path / "pets" / "test")
    data = load_folder(tmp_path / "pets")  # without test/, val/ is what the run evaluates on
    assert len(data.x_test) == 6 and data.x_val is None and "no test/ folder" in data.report.test_from


@pytest.mark.parametrize("make, message", [
    (lambda r: (r / "train" / "cat").mkdir(parents=True) or (r / "test" / "dog").mkdir(parents=True),
     "test/dog/ is a class that train/ does not have"),
    (lambda r: (r / "val" / "cat").mkdir(parents=True), "no train/ folder"),
    (lambda r: (r / "train" / "cat").mkdir(parents=True) or (r / "extra").mkdir(), "mixes split folders"),
    (lambda r: (r / "cat").mkdir(parents=True) or (r / "cat" / "a.png").write_text("x"),
     "class folder cat/ in .* has no usable image"),
    (lambda r: r.mkdir(), "has no subfolders"),
])
def test_layout_errors_name_the_folder(tmp_path, make, message):
    root = tmp_path / "data"
    make(root)
    with pytest.raises(ValueError, match=message):
        load_folder(root)


def test_cache_is_used_and_invalidated_when_a_file_changes(tmp_path):
    root = tmp_path / "shapes"
    for cls, value in (("dark", 40), ("light", 200)):
        for i in range(5):
            _png(root / cls / f"{i}.png", np.full((8, 8), value + i, dtype=np.uint8))
    first = load_folder(root, holdout=0.2)
    again = load_folder(root, holdout=0.2)
    assert not first.report.cached and again.report.cached
    np.testing.assert_array_equal(first.x_train, again.x_train)
    changed = root / "dark" / "0.png"
    _png(changed, np.full((8, 8), 99, dtype=np.uint8))
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    third = load_folder(root, holdout=0.2)
    assert not third.report.cached
    values = sorted(int(v) for v in np.concatenate([third.x_train, third.x_test])[:, 0, 0, 0])
    assert 99 in values and 40 not in values
    assert len(list((tmp_path / "cache" / "folders").glob("*.npz"))) == 1  # the stale entry was replaced


def test_sizes_colours_and_formats(tmp_path, monkeypatch):
    root = tmp_path / "mixed"
    red = np.zeros((30, 60, 3), dtype=np.uint8)
    red[..., 0] = 255
    _png(root / "red" / "wide.png", red)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    Image.fromarray(red).save(root / "red" / "turned.jpg", exif=exif)
    frames = [Image.new("L", (60, 30), 255), Image.new("L", (60, 30), 0)]
    (root / "white").mkdir()
    frames[0].save(root / "white" / "anim.gif", save_all=True, append_images=frames[1:])
    rgba = np.zeros((30, 60, 4), dtype=np.uint8)  # fully transparent: composited on white
    Image.fromarray(rgba).save(root / "white" / "clear.png")
    data = load_folder(root, holdout=0.5, image_size=(10, 20))
    x = np.concatenate([data.x_train, data.x_test])
    y = np.concatenate([data.y_train, data.y_test])
    assert x.shape == (4, 10, 20, 3) and data.report.color == "rgb"
    assert (x[y == 1] == 255).all()  # GIF's first frame and transparency are white
    assert (x[y == 0][..., 0] > 200).all() and (x[y == 0][..., 2] < 60).all()
    gray = load_folder(root, holdout=0.5, image_size=(10, 20), color="grayscale")
    assert gray.input_shape == (10, 20, 1)

    from cnnlab.datasets import image_files
    assert image_files.open_image(root / "red" / "turned.jpg").size == (30, 60)  # (width, height) after EXIF turn
    monkeypatch.setattr(image_files, "MAX_PIXELS", 1900)  # the others have 1,800 pixels
    _png(root / "red" / "big.png", np.zeros((40, 50), dtype=np.uint8))
    bombs = load_folder(root, image_size=(10, 20), cache=False, holdout=0.5)
    assert [(b.path, "decompression bomb" in b.reason) for b in bombs.report.bad_files] == [("red/big.png", True)]
    assert default_image_size([(3000, 4000)] * 3 + [(10, 10)]) == (96, 128)
    assert default_image_size([(28, 28), (28, 28), (56, 56)]) == (28, 28)


def test_stratified_split_is_seeded_and_keeps_class_proportions():
    y = np.repeat(np.arange(3), [50, 20, 1])
    keep, held = stratified_split(y, 0.2, seed=1)
    assert np.bincount(y[held], minlength=3).tolist() == [10, 4, 0]  # a class of one stays in training
    assert sorted([*keep, *held]) == list(range(len(y)))
    np.testing.assert_array_equal(held, stratified_split(y, 0.2, seed=1)[1])
    assert not np.array_equal(held, stratified_split(y, 0.2, seed=2)[1])


def test_check_finds_duplicates_leakage_imbalance_and_bad_files(tmp_path, mnist, capsys):
    root = tmp_path / "checked"
    for split, n in (("train", {"a": 12, "b": 4}), ("test", {"a": 3, "b": 3})):
        for cls, count in n.items():
            offset = {"a": 0, "b": 100}[cls] + (50 if split == "test" else 0)
            for i in range(count):
                _png(root / split / cls / f"{i}.png", mnist.x_train[offset + i, ..., 0])
    shutil.copy(root / "train" / "a" / "0.png", root / "train" / "a" / "copy.png")  # within a class
    Image.fromarray(mnist.x_train[1, ..., 0]).save(root / "train" / "b" / "also-a.bmp")  # other class, other format
    shutil.copy(root / "train" / "b" / "2.png", root / "test" / "b" / "leak.png")  # train -> test
    (root / "test" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)

    report = check_folder(root)
    assert report["counts"]["train"] == {"a": 13, "b": 5}
    paths = lambda key: [sorted(f["path"] for f in g["files"]) for g in report["duplicates"][key]]  # noqa: E731
    assert paths("within_class") == [["train/a/0.png", "train/a/copy.png"]]
    assert report["duplicates"]["within_class"][0]["fix"].startswith("keep train/a/0.png and delete train/a/copy.png")
    assert paths("across_classes") == [["train/a/1.png", "train/b/also-a.bmp"]]
    assert paths("across_splits") == [["test/b/leak.png", "train/b/2.png"]]
    assert "test/b/leak.png" in report["duplicates"]["across_splits"][0]["fix"]
    assert [b["path"] for b in report["bad_files"]] == ["test/a/broken.png"]
    imbalance = report["imbalance"]
    assert imbalance["ratio"] == pytest.approx(13 / 5) and imbalance["train_uses_weights"]
    assert imbalance["class_weights"] == {"a": pytest.approx(18 / 26, abs=1e-4), "b": pytest.approx(18 / 10)}

    assert main(["data", "check", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["duplicates"] == report["duplicates"]
    assert main(["data", "check", str(root)]) == 0
    text = capsys.readouterr().out
    assert "leakage" in text and "train WILL use class weights" in text
    assert main(["train", "--data", str(root), "--model", "mlp", "--epochs", "1", "--out", str(tmp_path / "r")]) == 0
    assert "class weights: a 0.6923, b 1.8" in capsys.readouterr().out
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["train"]["class_weight"] == [0.6923, 1.8]


def test_class_weights_match_the_balanced_formula():
    assert class_weights([30, 10]) == pytest.approx((40 / 60, 40 / 20), abs=1e-4)  # rounded for printing
    assert auto_class_weight(np.array([0] * 14 + [1] * 10), 2) is None  # 1.4x: below the threshold
    assert auto_class_weight(np.array([0] * 16 + [1] * 10), 2) == class_weights([16, 10])


def test_export_cli_writes_a_class_per_folder_tree(tmp_path, capsys):
    out = tmp_path / "fashion-like"
    assert main(["data", "export", "mnist", "--format", "png", "--out", str(out), "--layout", "classes",
                 "--limit", "20"]) == 0
    assert "cnnlab train --data" in capsys.readouterr().out
    layout = scan(out)
    assert layout.class_names == tuple(str(d) for d in range(10)) and not layout.split_folders
    assert sum(len(files) for files in layout.splits["train"].values()) == 40
    assert main(["data", "export", "mnist", "--out", str(out), "--limit", "1"]) == 1  # exists: refused
    assert folder_names(["T-shirt/top", "Bag", "Bag"]) == ("T-shirt_top", "Bag", "Bag_2")


def test_train_flags_size_colour_augment_and_evaluate_reads_the_folder_the_same_way(tmp_path, capsys):
    root = tmp_path / "shapes"
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        for i in range(10):
            _png(root / cls / f"{i}.png", rng.integers(0, 255, (20, 30), dtype=np.uint8))
    run = tmp_path / "run"
    assert main(["train", "--data", str(root), "--image-size", "14x16", "--color", "rgb", "--augment",
                 "--rotation", "5", "--model", "mlp", "--epochs", "1", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "image size 14x16 (as asked)" in out and "augmentation: shift 10%, rotation ±5°, zoom ±10%, horizontal flips" in out
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["augment"]["rotation"] == 5 and config["train"]["augment"]["horizontal_flip"]
    assert main(["evaluate", str(run), "--json"]) == 0  # the run remembers 14x16 rgb, not the 20x30 default
    assert json.loads(capsys.readouterr().out)["n_test"] == 4
    with pytest.raises(SystemExit):
        main(["train", "--data", str(root), "--image-size", "big"])


def test_check_advises_keeping_the_original_name_not_the_copy(tmp_path, mnist):
    root = tmp_path / "two"
    for cls, offset in (("eight", 0), ("three", 10)):
        for i in range(3):
            _png(root / cls / f"test-{i:05d}.png", mnist.x_train[offset + i, ..., 0])
    shutil.copy(root / "eight" / "test-00001.png", root / "eight" / "copy-of-test-00001.png")  # sorts first
    fix = check_folder(root)["duplicates"]["within_class"][0]["fix"]
    assert fix.startswith("keep eight/test-00001.png and delete eight/copy-of-test-00001.png"), fix
