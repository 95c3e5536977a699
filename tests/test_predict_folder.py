"""`cnnlab predict RUN FOLDER --csv/--jsonl [--sort-into]`: walked folders, one row per image (errors included),
the same top class as the saved module run eagerly, resumption after SIGKILL with exactly one row per image,
sorting by hard link without touching originals, and the merge of torchrun parts. Photos: scikit-image's;
digits: MNIST through the tiny trained run."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab import cli
from cnnlab.datasets.image_files import load_image_for
from cnnlab.datasets.image_walk import image_paths
from cnnlab.runs import predict_folder as pf
from cnnlab.runs.open_model import open_model
from cnnlab.runs.predict import class_probabilities
from cnnlab.runs.result_file import ResultFile

skimage_data = pytest.importorskip("skimage.data")
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


@pytest.fixture
def photo_tree(tmp_path):
    root = tmp_path / "photos"
    (root / "a" / "deeper").mkdir(parents=True)
    (root / "b").mkdir()
    for i, name in enumerate(PHOTOS):
        folder = root / ("a" if i < 2 else "b") / ("deeper" if i == 1 else "")
        Image.fromarray(getattr(skimage_data, name)()).save(folder / f"{name}.jpg", quality=90)
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (root / "b" / "notes.txt").write_text("not an image")
    (root / "b" / ".hidden.jpg").write_bytes(b"")
    os.symlink(root / "a" / "chelsea.jpg", root / "b" / "link.jpg")
    return root


def test_walk_is_sorted_recursive_images_only_and_follows_no_link(photo_tree):
    files, skipped = image_paths([photo_tree])
    rel = [f.relative_to(photo_tree).as_posix() for f in files]
    assert rel == ["a/chelsea.jpg", "a/deeper/coffee.jpg", "b/astronaut.jpg", "b/broken.png", "b/rocket.jpg"]
    assert [(p.name, "link" in r) for p, r in skipped] == [("link.jpg", True)]
    fifo = photo_tree / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="FIFO"):
        image_paths([fifo])


def test_csv_rows_match_the_saved_module_and_report_the_bad_file(photo_tree, tmp_path, capsys):
    out = tmp_path / "predictions.csv"
    assert cli.main(["predict", "imagenet", str(photo_tree), "--csv", str(out), "--top-k", "2", "--quiet"]) == 0
    rows = list(csv.DictReader(out.open(newline="")))
    assert [Path(r["path"]).name for r in rows] == ["chelsea.jpg", "coffee.jpg", "astronaut.jpg", "broken.png",
                                                    "rocket.jpg"]
    bad = rows[3]
    assert bad["class"] == "" and "PNG" in bad["error"] or "corrupt" in bad["error"] or "truncated" in bad["error"]
    model = open_model("imagenet")
    good = [r for r in rows if not r["error"]]
    images = np.stack([load_image_for(r["path"], model.spec.input_shape, model.preprocessing) for r in good])
    reference = class_probabilities(model.module, images)  # the saved module, eager float32
    for row, probs in zip(good, reference):
        assert row["class"] == model.class_names[int(probs.argmax())]
        assert abs(float(row["probability"]) - float(probs.max())) < 0.1  # bf16 where native moves it a little
        assert len(row["top_k"].split("; ")) == 2
    assert "5 rows written" in capsys.readouterr().out


def _digits(root: Path, mnist, n: int) -> Path:
    for i in range(n):
        folder = root / str(int(mnist.y_test[i]))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mnist.x_test[i][..., 0]).save(folder / f"{i:04d}.png")
    return root


@pytest.mark.slow
def test_sigkill_then_rerun_ends_with_exactly_one_row_per_image(tiny_run, mnist, tmp_path):
    folder = _digits(tmp_path / "digits", mnist, 400)
    out = tmp_path / "rows.jsonl"
    command = [sys.executable, "-m", "cnnlab.cli.commands", "predict", str(tiny_run), str(folder), "--jsonl", str(out),
               "--batch-size", "1", "--quiet"]
    proc = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 20):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = out.read_bytes().count(b"\n")
    assert 20 <= written < 400, "the run should have been killed part way"
    with open(out, "ab") as f:
        f.write(b'{"path": "/torn')  # a row cut short, as a kill inside a write would leave it
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 400 and len({r["path"] for r in rows}) == 400
    digits = sum(Path(r["path"]).parent.name == r["class"] for r in rows)
    assert digits / 400 > 0.85  # the tiny run's accuracy: rows are real predictions


def test_sort_into_hard_links_never_touches_originals_and_reruns_add_nothing(tiny_run, mnist, tmp_path):
    folder = _digits(tmp_path / "digits", mnist, 30)
    before = {p: p.read_bytes() for p in folder.rglob("*.png")}
    sorted_dir = tmp_path / "sorted"
    (sorted_dir / "7").mkdir(parents=True)
    taken = sorted_dir / "7" / "0000.png"
    taken.write_bytes(b"someone else's file")
    args = ["predict", str(tiny_run), str(folder), "--csv", str(tmp_path / "p.csv"), "--sort-into", str(sorted_dir),
            "--quiet"]
    assert cli.main(args) == 0
    assert {p: p.read_bytes() for p in folder.rglob("*.png")} == before  # originals unchanged, none moved
    assert taken.read_bytes() == b"someone else's file"
    placed = sorted(p for p in sorted_dir.rglob("*.png") if p != taken)
    assert len(placed) == 30
    for p in placed:
        original = folder / next(d for d in ("0123456789") if (folder / d / p.name.replace("-1", "")).exists()) / \
            p.name.replace("-1", "")
        assert os.path.samefile(p, original)
    (tmp_path / "p.csv").unlink()  # forget the rows: sorting again must reuse the links, not add copies
    assert cli.main(args) == 0
    assert sorted(p for p in sorted_dir.rglob("*.png") if p != taken) == placed


def test_sort_into_inside_the_walked_folder_is_refused(tiny_run, mnist, tmp_path, capsys):
    folder = _digits(tmp_path / "digits", mnist, 3)
    assert cli.main(["predict", str(tiny_run), str(folder), "--sort-into", str(folder / "sorted")]) == 1
    assert "inside" in capsys.readouterr().err


def test_torchrun_parts_merge_into_one_file_without_duplicates(tmp_path):
    out = ResultFile(tmp_path / "all.csv", "csv")
    rows = [{"path": f"/p/{i}.jpg", "class": "cat", "probability": 0.9, "top": [], "error": None} for i in range(7)]
    out.open()
    out.append(rows[0])  # already merged by an earlier, interrupted merge
    out.close()
    for rank in range(2):
        part = pf.part_file(out, rank, 2)
        part.open()
        for row in rows[rank::2]:
            part.append(row)
        part.close()
    assert pf.merge_parts(out, 2) == 6
    paths = [r["path"] for r in csv.DictReader(out.path.open(newline=""))]
    assert sorted(paths) == sorted(r["path"] for r in rows) and len(paths) == 7
    assert not list(tmp_path.glob("*.part*"))


@pytest.mark.slow
def test_torchrun_two_processes_write_one_merged_file(tiny_run, mnist, tmp_path):
    folder = _digits(tmp_path / "digits", mnist, 24)
    out = tmp_path / "rows.jsonl"
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this Python")
    subprocess.run([str(torchrun), "--nproc_per_node", "2", "-m", "cnnlab.cli.commands", "predict", str(tiny_run),
                    str(folder), "--jsonl", str(out), "--quiet"], check=True, timeout=300,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 24 and len({r["path"] for r in rows}) == 24
    assert not list(tmp_path.glob("rows.jsonl.part*"))


def test_both_engines_agree_with_the_saved_module(photo_tree):
    from cnnlab.runs.fast_predict import Classifier, pick_engine
    model = open_model("imagenet")
    files = [f for f in image_paths([photo_tree])[0] if f.suffix == ".jpg"]
    images = np.stack([load_image_for(f, model.spec.input_shape, model.preprocessing) for f in files])
    reference = class_probabilities(model.module, images)
    for engine in ("torch", "onnxruntime"):
        probs = Classifier(model, engine=engine)(images)
        assert (probs.argmax(1) == reference.argmax(1)).all(), engine
        assert np.abs(probs - reference).max() < (1e-4 if engine == "onnxruntime" else 0.1), engine
    assert pick_engine("torch", torch.device("cpu")) == "torch"
    with pytest.raises(ValueError, match="engine must be"):
        pick_engine("tensorrt", torch.device("cpu"))
