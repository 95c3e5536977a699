"""A hostile-input corpus, generated here (no committed binaries): `.keras` files, model files, images and image
folders that lie, break or ask for too much. Each case runs through the CLI in one subprocess under a 1.5 GB
address-space limit (RLIMIT_AS) and must end within 10 s with a one-line error or the right answer."""
from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from cnnlab.runs import model_file
from cnnlab.runs.keras_file import keras_bytes
from cnnlab.spec import layers as L
from cnnlab.spec.build import build

LIMIT_BYTES = 1536 << 20
CASE_SECONDS = 10

RUNNER = r"""
import contextlib, io, json, resource, signal, sys, time
resource.setrlimit(resource.RLIMIT_AS, (%d, %d))
from cnnlab.cli.commands import main

class Hang(Exception):
    pass

def alarm(*_):
    raise Hang()

signal.signal(signal.SIGALRM, alarm)
for name, argv in json.load(open(sys.argv[1])).items():
    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    signal.alarm(%d)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    except Hang:
        rc = "hang"
    except BaseException as exc:
        rc = "raised " + type(exc).__name__ + ": " + str(exc)[:300]
    finally:
        signal.alarm(0)
    print(json.dumps({"name": name, "rc": rc, "seconds": time.perf_counter() - started,
                      "out": out.getvalue()[-3000:], "err": err.getvalue()[-3000:]}), flush=True)
""" % (LIMIT_BYTES, LIMIT_BYTES, CASE_SECONDS)

SPEC = L.ModelSpec((L.Flatten(), L.Dense(2, activation="softmax")), (4, 4, 1))


# --- .keras files ---------------------------------------------------------------------------------------
def _keras_members() -> dict[str, bytes]:
    import torch
    torch.manual_seed(0)
    with zipfile.ZipFile(io.BytesIO(keras_bytes(SPEC, build(SPEC), ["cat", "dog"]))) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def _zip(members: dict[str, bytes], deflate: bool = False) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _weights(fill: float) -> bytes:
    """model.weights.h5 of SPEC with every kernel value `fill`."""
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_group("vars")
        f.create_group("layers/flatten/vars")
        group = f.create_group("layers/dense/vars")
        group["0"] = np.full((16, 2), fill, np.float32)
        group["1"] = np.zeros(2, np.float32)
    return buf.getvalue()


def _config_with(change) -> bytes:
    config = json.loads(_keras_members()["config.json"])
    change(config)
    return json.dumps(config).encode()


def _dense_layers(config: dict) -> list[dict]:
    return [c for c in config["config"]["layers"] if c["class_name"] == "Dense"]


def _huge_declared() -> bytes:
    """46 KB that declares a 4 GB Dense kernel: an HDF5 dataset never written holds only its fill value."""
    members = _keras_members()
    members["config.json"] = _config_with(lambda c: _dense_layers(c)[0]["config"].update(units=2 ** 26))
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_group("vars")
        f.create_group("layers/flatten/vars")
        group = f.create_group("layers/dense/vars")
        group.create_dataset("0", (16, 2 ** 26), np.float32, chunks=(16, 2 ** 16), compression="gzip")
        group.create_dataset("1", (2 ** 26,), np.float32, chunks=(2 ** 16,), compression="gzip")
    members["model.weights.h5"] = buf.getvalue()
    return _zip(members, deflate=True)


def _lying_size() -> bytes:
    """config.json's central-directory entry claims 2 GB of stored (compressed) data but a small size once read:
    a reader that reads the entry in one call allocates 2 GB before its CRC fails."""
    raw = bytearray(_zip(_keras_members()))
    at = raw.rfind(b"PK\x01\x02", 0, raw.rfind(b"config.json"))  # its central directory record
    assert raw[at + 46:at + 46 + 11] == b"config.json"
    raw[at + 20:at + 24] = struct.pack("<I", 2 ** 31 - 2)  # the compressed size; the uncompressed one is kept
    return bytes(raw)


def _many_objects(n: int) -> bytes:
    members = _keras_members()
    members["config.json"] = b"[" + b"{}," * n + b"{}]"
    return _zip(members, deflate=True)


def _deep_json() -> bytes:
    members = _keras_members()
    members["config.json"] = b"[" * 200_000 + b"]" * 200_000
    return _zip(members, deflate=True)


def _many_layers(n: int) -> bytes:
    def add(config: dict) -> None:
        layers = config["config"]["layers"]
        act = {"module": "keras.layers", "class_name": "Activation", "registered_name": None,
               "config": {"name": "a", "activation": "relu"}}
        config["config"]["layers"] = [layers[0], *[dict(act, config={"name": f"a{i}", "activation": "relu"})
                                                   for i in range(n)], *layers[1:]]
    members = _keras_members()
    members["config.json"] = _config_with(add)
    return _zip(members, deflate=True)


def _encrypted() -> bytes:
    raw = bytearray(_zip(_keras_members()))
    for sig, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local header and central record: bit 0 set
        at = -1
        while (at := raw.find(sig, at + 1)) != -1:
            raw[at + flag_at] |= 1
    return bytes(raw)


def _member_swapped(name: str, data: bytes) -> bytes:
    members = _keras_members()
    members[name] = data
    return _zip(members)


def _keras_corpus(root: Path) -> dict[str, tuple[bytes, str, str]]:
    """name -> (file bytes, "ok" or "error", a regex the answer or the error must match)."""
    members = _keras_members()
    ok_weights = _weights(0.5)
    return {
        "keras_ok": (_member_swapped("model.weights.h5", ok_weights), "ok", r"(cat|dog) 0\.500"),
        "keras_nan": (_member_swapped("model.weights.h5", _weights(float("nan"))), "error", r"NaN or infinite"),
        "keras_inf": (_member_swapped("model.weights.h5", _weights(float("inf"))), "error", r"NaN or infinite"),
        "keras_4gb_declared": (_huge_declared(), "error", r"needs about .* GB of memory"),
        "keras_lying_entry_size": (_lying_size(), "ok", r"(cat|dog) 0\.\d{3}"),  # read in bounded chunks: intact
        "keras_21m_empty_objects": (_many_objects(21_000_000), "error", r"config\.json (is|holds) .*more than"),
        "keras_3m_values": (_many_objects(3_000_000), "error", r"JSON values, more than"),
        "keras_deep_json": (_deep_json(), "error", r"not valid JSON"),
        "keras_100k_layers": (_many_layers(100_000), "error", r"100,001 layers|100,002 layers|layers, more than"),
        "keras_1000_layers_load": (_many_layers(1000), "ok", r"(cat|dog) 0\.\d{3}"),
        "keras_encrypted": (_encrypted(), "error", r"encrypted"),
        "keras_registered_name": (_member_swapped("config.json", _config_with(lambda c: _dense_layers(c)[0].update(
            class_name="Evil", module="evil.layers", registered_name="Dense"))), "error", r"config"),
        "keras_dtype_object": (_member_swapped("config.json", _config_with(lambda c: _dense_layers(c)[0]["config"]
                                                                          .update(dtype={"config": "float32"}))),
                               "error", r"dtype|config"),
        "keras_truncated": (_zip(members)[:300], "error", r"damaged|not a \.keras"),
        "keras_not_a_zip": (b"hello" * 100, "error", r"not a \.keras file"),
        "keras_no_weights": (_zip({k: v for k, v in members.items() if k != "model.weights.h5"}), "error",
                             r"no model\.weights\.h5"),
        "keras_wrong_shape": (_member_swapped("config.json", _config_with(
            lambda c: _dense_layers(c)[0]["config"].update(units=3))), "error", r"shape|variables|class names"),
    }


# --- model files ------------------------------------------------------------------------------------------
def _model_bytes(root: Path, spec=SPEC, names=("cat", "dog"), preprocessing=None) -> bytes:
    import torch
    torch.manual_seed(0)
    path = model_file.save_model(root / "tmp.safetensors", spec, build(spec), list(names), preprocessing or {})
    data = path.read_bytes()
    path.unlink()
    return data


def _edited(raw: bytes, change) -> bytes:
    """The model file with its metadata changed by `change(meta)`, the digests left as they were."""
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    meta = json.loads(header["__metadata__"]["cnnlab"])
    change(meta)
    return st_save(st_load(raw), metadata={"cnnlab": json.dumps(meta)})


def _model_corpus(root: Path) -> dict[str, tuple[bytes, str, str]]:
    rgb = L.ModelSpec((L.Flatten(), L.Dense(2, activation="softmax")), (8, 8, 3))
    good = _model_bytes(root)
    photo = _model_bytes(root, rgb, preprocessing={"resize_to": 12})

    def resize(value):
        return _edited(photo, lambda m: (m["preprocessing"].update(resize_to=value), m.pop("metadata_sha256", None)))
    return {
        "model_ok": (good, "ok", r"(cat|dog) 0\.\d{3}"),
        "model_swapped_class_names": (_edited(good, lambda m: m.update(class_names=["dog", "cat"])), "error",
                                      r"metadata .* does not match the file's SHA-256"),
        "model_edited_preprocessing": (_edited(good, lambda m: m.update(preprocessing={"mnist_style": True})), "error",
                                       r"does not match the file's SHA-256"),
        "model_resize_1e9": (resize(10 ** 9), "error", r"resize_to must be a whole number of pixels"),
        "model_resize_20000": (resize(20000), "error", r"resize_to must be .* 8 to 32, got 20000"),
        "model_resize_1e308": (resize(1e308), "error", r"resize_to must be"),
        "model_resize_list": (resize([256]), "error", r"resize_to must be"),
        "model_resize_ok": (photo, "ok", r"(cat|dog) 0\.\d{3}"),
        "model_version_string": (_edited(good, lambda m: m.update(format_version="1")), "error",
                                 r"format_version '1' \(str\); this cnnlab reads .* the number 1"),
        "model_truncated": (good[:100], "error", r"not a readable"),
        "model_21m_empty_objects": (st_save(st_load(good), metadata={"cnnlab": "[" + "{}," * 21_000_000 + "{}]"}),
                                    "error", r"metadata is 63,000,004 bytes of JSON, more than"),
        "model_no_spec": (_edited(good, lambda m: (m.pop("spec"), m.pop("metadata_sha256", None))), "error",
                          r"metadata has no 'spec' entry"),
        "model_conv_output": (_model_bytes(root, L.ModelSpec((L.Conv2D(2, 3),), (4, 4, 1))), "error",
                              r"outputs a 2x2x2 feature map per image, not one score per class"),
    }


# --- images -----------------------------------------------------------------------------------------------
def _image_corpus(root: Path) -> dict[str, tuple[str, str, str]]:
    """name -> (path of the image given to predict, "ok"/"error", regex)."""
    Image.fromarray(np.full((4, 4), 200, np.uint8)).save(root / "ok.png")
    os.mkfifo(root / "fifo.jpg")
    (root / "README.md").write_text("# notes\nnot a picture\n")
    (root / "folder.png").mkdir()
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, "PNG")
    (root / "bomb.png").write_bytes(bomb.getvalue())
    (root / "empty.png").write_bytes(b"")
    (root / "linked.md").symlink_to(root / "gone.md")
    return {
        "image_ok": (str(root / "ok.png"), "ok", r"ok\.png: (cat|dog) 0\.\d{3}"),
        "image_fifo": (str(root / "fifo.jpg"), "error", r"fifo\.jpg: not a regular file"),
        "image_dev_zero": ("/dev/zero", "error", r"not a regular file"),
        "image_text_file": (str(root / "README.md"), "error", r"README\.md: not an image: a text file"),
        "image_folder": (str(root / "folder.png"), "error", r"no image files in .*folder\.png"),  # walked as a folder
        "image_bomb": (str(root / "bomb.png"), "error", r"decompression bomb"),
        "image_empty": (str(root / "empty.png"), "error", r"empty file"),
        "image_broken_link": (str(root / "linked.md"), "error", r"linked\.md: a broken link \(its target .*gone\.md"),
        "image_missing": (str(root / "missing.png"), "error", r"not found"),
    }


# --- image folders ----------------------------------------------------------------------------------------
def _folder(root: Path, classes: dict[bytes, int]) -> Path:
    for name, n in classes.items():
        folder = os.path.join(os.fsencode(root), name)
        os.makedirs(folder)
        for i in range(n):
            Image.fromarray(np.full((6, 6), 30 * i + len(name), np.uint8)).save(os.path.join(folder, b"%d.png" % i))
    return root


def _folder_corpus(root: Path) -> dict[str, tuple[list[str], str, str]]:
    """name -> (the train arguments, "ok"/"error", regex)."""
    odd = _folder(root / "non_utf8", {b"caf\xe9": 4, b"tea": 4})
    os.mkfifo(os.path.join(os.fsencode(odd), b"tea", b"pipe\xff.png"))
    ansi = _folder(root / "ansi", {b"\x1b[2Jred": 4, b"blue\nfake line": 4})
    (ansi / "blue\nfake line" / "x\x1b[31m.png").write_bytes(b"")
    empty = _folder(root / "empty_class", {b"a": 3, b"b": 0})
    (empty / "b" / "0.png").write_bytes(b"not a png")
    escaped_empty = _folder(root / "escaped_empty_class", {b"a": 3, b"\x1bb": 0})
    (escaped_empty / "\x1bb" / "0.png").write_bytes(b"")

    def train(folder: Path, name: str) -> list[str]:
        return ["train", "--data", str(folder), "--model", "flatten dense2:softmax", "--epochs", "1", "--quiet",
                "--out", str(root / f"run-{name}")]
    return {
        "folder_non_utf8_names_and_fifo": (train(odd, "a"), "ok", r"test accuracy[\s\S]*pipe\\xff\.png  not a regular"),
        "folder_ansi_and_newline_names": (train(ansi, "b"), "ok", r"test accuracy[\s\S]*x\\x1b\[31m\.png  empty file"),
        "folder_class_without_images": (train(empty, "c"), "error", r"class folder b/ .* has no usable image"),
        "folder_escaped_class_without_images": (train(escaped_empty, "e"), "error",
                                                r"class folder \\x1bb/ .* no usable image \(1 file could not be read: empty"),
        "folder_proc": (train(Path("/proc/self"), "d"), "error", r"system folder"),
    }


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> tuple[dict[str, dict], dict[str, tuple[str, str]]]:
    root = tmp_path_factory.mktemp("hostile")
    cases: dict[str, list[str]] = {}
    expect: dict[str, tuple[str, str]] = {}
    image = str(root / "ok.png")
    for name, (path, kind, pattern) in _image_corpus(root).items():
        cases[name], expect[name] = ["predict", str(root / "model.safetensors"), path], (kind, pattern)
    (root / "model.safetensors").write_bytes(_model_bytes(root))
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(root / "rgb.png")
    for name, (data, kind, pattern) in _model_corpus(root).items():
        (root / f"{name}.safetensors").write_bytes(data)
        picture = str(root / "rgb.png") if "resize" in name else image
        cases[name], expect[name] = ["predict", str(root / f"{name}.safetensors"), picture], (kind, pattern)
    for name, (data, kind, pattern) in _keras_corpus(root).items():
        (root / f"{name}.keras").write_bytes(data)
        cases[name], expect[name] = ["predict", str(root / f"{name}.keras"), image], (kind, pattern)
    for name, (argv, kind, pattern) in _folder_corpus(root / "folders").items():
        cases[name], expect[name] = argv, (kind, pattern)
    (root / "cases.json").write_text(json.dumps(cases))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CNNLAB_DATA": str(root / "cache")}
    env.pop("CNNLAB_MEMORY_LIMIT", None)
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(root / "cases.json")], capture_output=True, text=True,
                          env=env, timeout=CASE_SECONDS * len(cases) + 60)
    results = {r["name"]: r for r in map(json.loads, filter(None, proc.stdout.splitlines()))}
    if len(results) < len(cases):
        results["__crash__"] = {"rc": proc.returncode, "err": proc.stderr[-3000:]}
    return results, expect


ALL_CASES = [
    "image_ok", "image_fifo", "image_dev_zero", "image_text_file", "image_folder", "image_bomb", "image_empty",
    "image_broken_link", "image_missing", "model_ok", "model_swapped_class_names", "model_edited_preprocessing", "model_resize_1e9",
    "model_resize_20000", "model_resize_1e308", "model_resize_list", "model_resize_ok", "model_version_string",
    "model_truncated", "model_21m_empty_objects", "model_no_spec", "model_conv_output", "keras_ok", "keras_nan", "keras_inf", "keras_4gb_declared", "keras_lying_entry_size",
    "keras_21m_empty_objects", "keras_3m_values", "keras_deep_json", "keras_100k_layers", "keras_1000_layers_load",
    "keras_encrypted", "keras_registered_name", "keras_dtype_object", "keras_truncated", "keras_not_a_zip",
    "keras_no_weights", "keras_wrong_shape", "folder_non_utf8_names_and_fifo", "folder_ansi_and_newline_names",
    "folder_class_without_images", "folder_escaped_class_without_images", "folder_proc",
]


@pytest.mark.parametrize("name", ALL_CASES)
def test_hostile_case(hostile, name):
    import re
    results, expect = hostile
    assert name in expect, f"{name} is not in the corpus"
    result = results.get(name)
    assert result is not None, f"the runner died before {name}: {results.get('__crash__')}"
    kind, pattern = expect[name]
    assert result["seconds"] < CASE_SECONDS, result
    assert "\x1b" not in result["out"] + result["err"], result  # no name reaches the terminal raw
    if kind == "ok":
        assert result["rc"] == 0 and re.search(pattern, result["out"]), result
    else:
        lines = result["err"].strip().splitlines()
        assert result["rc"] == 1 and len(lines) == 1 and lines[0].startswith("cnnlab: error: "), result
        assert re.search(pattern, lines[0]), result
