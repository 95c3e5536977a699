"""Issue 21's file items outside the corpus: clear folder reports, model-file metadata digest, export on a full disk."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli.commands import main
from cnnlab.datasets.folders.load import load_folder
from cnnlab.runs import export as export_mod
from cnnlab.runs import model_file
from cnnlab.spec import layers as L
from cnnlab.spec.build import build

SPEC = L.ModelSpec((L.Flatten(), L.Dense(2, activation="softmax")), (4, 4, 1))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "cache"))


def _hostile_folder(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for name, n in ((b"\x1b[2Jevil", 5), (b"caf\xe9", 5), (b"line\nbreak", 1)):
        folder = os.path.join(os.fsencode(root), name)
        os.makedirs(folder)
        for i in range(n):
            Image.fromarray(np.full((8, 8), 20 * i + len(name), np.uint8)).save(os.path.join(folder, b"%d.png" % i))
    evil = os.path.join(os.fsencode(root), b"caf\xe9")
    Path(os.fsdecode(os.path.join(evil, b"bad\x1b[31m.png"))).write_bytes(b"")
    Path(os.fsdecode(os.path.join(evil, b"n\xffo.png"))).write_bytes(b"some text")
    return root


def test_report_escapes_names_lists_skipped_files_and_warns_of_one_image_classes(tmp_path):
    data = load_folder(_hostile_folder(tmp_path))
    assert set(data.class_names) == {"\\x1b[2Jevil", "caf\\xe9", "line\\nbreak"}  # shown as escapes everywhere
    text = "\n".join(data.report.lines())
    assert "\x1b" not in text and all(line.isprintable() for line in text.splitlines())
    text.encode("utf-8")  # no lone surrogates: print() cannot fail on it
    assert "skipped 2 files in" in text and "caf\\xe9/bad\\x1b[31m.png" in text and "caf\\xe9/n\\xffo.png" in text
    assert "listed at the end" not in text
    assert "note: class line\\nbreak has one image only" in text and "test accuracy says nothing" in text


def test_cli_train_on_hostile_names_prints_no_raw_escapes(tmp_path, capsys):
    root = _hostile_folder(tmp_path)
    assert main(["train", "--data", str(root), "--model", "flatten dense3:softmax", "--epochs", "1",
                 "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\udce9" not in out and "line\\nbreak 1" in out
    assert main(["predict", str(tmp_path / "run"), os.fsdecode(os.path.join(os.fsencode(root), b"caf\xe9",
                                                                             b"0.png"))]) == 0
    out = capsys.readouterr().out
    assert out.startswith(str(root) + "/caf\\xe9/0.png: ") and "\x1b" not in out


def test_too_many_skipped_files_are_summed_up(tmp_path):
    root = tmp_path / "d"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / cls / f"{i}.png")
    for i in range(25):
        (root / "a" / f"empty{i:02d}.png").write_bytes(b"")
    lines = load_folder(root).report.lines()
    assert sum("empty file (0 bytes)" in line for line in lines) == 20
    assert any("... and 5 more (cnnlab data check" in line for line in lines)


def test_printable():
    from cnnlab.printable import printable
    assert printable("plain é 漢字") == "plain é 漢字"
    assert printable("\x1b[31mred\nx\t\u202e") == "\\x1b[31mred\\nx\\t\\u202e"
    assert printable(os.fsdecode(b"caf\xe9")) == "caf\\xe9"


# --- model files ------------------------------------------------------------------------------------------
def _meta(path: Path) -> dict:
    raw = path.read_bytes()
    return json.loads(json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])["__metadata__"]["cnnlab"])


def _rewrite_meta(path: Path, change) -> None:
    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save
    meta = _meta(path)
    change(meta)
    path.write_bytes(st_save(st_load(path.read_bytes()), metadata={"cnnlab": json.dumps(meta)}))


def test_metadata_is_covered_by_the_digest(tmp_path, capsys):
    path = model_file.save_model(tmp_path / "m.safetensors", SPEC, build(SPEC), ["cat", "dog"], {"scale": 255})
    assert _meta(path)["metadata_sha256"] == model_file.metadata_digest(_meta(path))
    assert model_file.read_model(path).class_names == ["cat", "dog"]
    _rewrite_meta(path, lambda m: m.update(class_names=["dog", "cat"]))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "x.png")
    assert main(["predict", str(path), str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the metadata (class names, preprocessing, spec) does not match the file's SHA-256" in err[0]


def test_files_from_before_the_metadata_digest_still_load(tmp_path):
    path = model_file.save_model(tmp_path / "m.safetensors", SPEC, build(SPEC), ["cat", "dog"], {})
    _rewrite_meta(path, lambda m: m.pop("metadata_sha256"))
    assert model_file.read_model(path).class_names == ["cat", "dog"]  # its tensors are still verified


# --- export onto a full disk -------------------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path) -> Path:
    big = L.ModelSpec((L.Flatten(), L.Dense(2000), L.Dense(2, activation="softmax")), (4, 4, 1))
    return model_file.save_model(tmp_path / "m.safetensors", big, build(big), ["a", "b"], {})


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_full_disk_is_one_line_and_leaves_no_tmp(tmp_path, saved, capsys, monkeypatch, fmt):
    import cnnlab.fsutil as fsutil
    real_open = open
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

    def fake_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        return Full(f) if "w" in mode and str(out_dir) in str(path) else f
    monkeypatch.setattr(fsutil, "open", fake_open, raising=False)
    if fmt == "onnx":
        pytest.importorskip("onnx")
    assert main(["export", str(saved), "--format", fmt, "--out", str(out_dir / f"m{export_mod.SUFFIXES[fmt]}")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write" in err[0] and "No space left on device" in err[0]
    assert list(out_dir.iterdir()) == []  # no .tmp, no half file


def test_export_torchscript_onto_a_real_full_tmpfs(tmp_path, saved):
    """A 64 KiB tmpfs (root only): the process must end with one line, not abort in C++ (exit 134)."""
    mount = tmp_path / f"tiny-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        proc = subprocess.run([sys.executable, "-c", "import sys; from cnnlab.cli.commands import main; sys.exit(main())",
                               "export", str(saved), "--format", "torchscript", "--out", str(mount / "m.pt")],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1, proc.stderr[-2000:]
        lines = [line for line in proc.stderr.strip().splitlines() if "Warning" not in line]
        assert lines[-1].startswith("cnnlab: error: [Errno 28] cannot write") and os.listdir(mount) == []
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


# --- loading is linear in the number of layers -------------------------------------------------------------
def test_sequential_add_does_not_scan_the_earlier_layers():
    """Each add() was a scan of every earlier layer's name (100,000 layers: 5e9 comparisons); now O(1)."""
    from cnnlab import layers, models

    class Counting(list):
        scans = 0

        def __iter__(self):
            Counting.scans += 1
            return super().__iter__()
    for make in (lambda: layers.Activation("relu"), lambda: L.Activation("relu")):  # layer objects, then specs
        model = models.Sequential(name="deep")
        model._layers = Counting()
        model.add(L.Input((4,)))
        for _ in range(100):
            model.add(make())
        names = [layer.name for layer in list.__iter__(model._layers)]
        assert len(set(names)) == 100 and list(model.spec.names) == names
    assert Counting.scans <= 4  # model.spec reads the list once per model
    assert names[:3] == ["activation", "activation_1", "activation_2"]  # specs are named within the model
    with pytest.raises(ValueError, match="used twice"):
        model.add(L.Activation("relu", name="activation_7"))
