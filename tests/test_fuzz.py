"""Hostile inputs: every reader either loads a file or raises cnnlab's own ValueError subclass, quickly,
without allocating more than the file's size justifies."""
from __future__ import annotations

import gzip
import io
import json
import resource
import struct
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from cnnlab.datasets.idx import IDXError, read_idx, write_idx
from cnnlab.datasets.image_files import ImageError, open_image, to_model_input
from cnnlab.runs import model_file as model_io
from cnnlab.runs.model_file import ModelFileError
from cnnlab.spec import compact, layers, zoo
from cnnlab.spec.build import build, keras_init_
from cnnlab.spec.layers import ModelSpec, SpecError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.function_scoped_fixture])
MEMORY_CAP = 1 << 30  # no reader may need 1 GiB for inputs of a few kilobytes


@contextmanager
def memory_cap(limit: int = MEMORY_CAP):
    """Turn an oversized allocation into MemoryError instead of a swapping machine (address space cap)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        in_use = int(f.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (in_use + limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def mutate(data: bytes, draw) -> bytes:
    """A few byte flips, a cut and an insertion: the damage real files suffer, near their headers."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(0, 6))):
        if buf:
            pos = draw(st.integers(0, min(len(buf) - 1, 200)))
            buf[pos] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        buf = buf[:draw(st.integers(0, len(buf)))]
    if draw(st.booleans()):
        pos = draw(st.integers(0, len(buf)))
        buf[pos:pos] = draw(st.binary(max_size=16))
    return bytes(buf)


# --- IDX ---------------------------------------------------------------------------------------
def idx_file(array: np.ndarray, tmp: Path, gz: bool) -> bytes:
    path = tmp / ("a.idx.gz" if gz else "a.idx")
    write_idx(path, array)
    return path.read_bytes()


@st.composite
def idx_bytes(draw) -> bytes:
    kind = draw(st.sampled_from(["valid", "mutated", "claims"]))
    if kind == "claims":  # a bare header claiming an arbitrary shape, with a little data
        ndim = draw(st.integers(0, 9))
        code = draw(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x07]))
        dims = draw(st.lists(st.integers(0, 2**32 - 1), min_size=ndim, max_size=ndim))
        raw = struct.pack(f">HBB{ndim}I", 0, code, ndim, *dims) + draw(st.binary(max_size=64))
        return gzip.compress(raw) if draw(st.booleans()) else raw
    shape = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    array = np.arange(int(np.prod(shape)), dtype=np.uint8).reshape(shape)
    raw = struct.pack(f">HBB{len(shape)}I", 0, 0x08, len(shape), *shape) + array.tobytes()
    raw = gzip.compress(raw) if draw(st.booleans()) else raw
    return raw if kind == "valid" else mutate(raw, draw)


@FUZZ
@given(idx_bytes())
def test_idx_reader_loads_or_raises_idx_error(raw):
    with memory_cap():
        try:
            array = read_idx(io.BytesIO(raw))
        except IDXError:
            return
    assert array.nbytes <= 1032 * len(raw) + 1024  # deflate's best ratio bounds what a file can hold


def test_idx_header_claiming_gigabytes_is_refused_before_reading(tmp_path):
    for gz in (False, True):
        raw = struct.pack(">HBB3I", 0, 0x08, 3, 60000, 1000, 1000) + b"\0" * 100  # claims 60 GB
        raw = gzip.compress(raw) if gz else raw
        path = tmp_path / f"big{gz}.idx"
        path.write_bytes(raw)
        with memory_cap(64 << 20), pytest.raises(IDXError, match="bytes"):
            read_idx(path)


def test_idx_gzip_bomb_is_refused(tmp_path):
    """1 GiB of zeros compresses to ~1 MB; a header claiming it in a much smaller file cannot be honest."""
    raw = gzip.compress(struct.pack(">HBB1I", 0, 0x08, 1, 900_000_000) + b"\0" * 2_000_000)
    with memory_cap(256 << 20), pytest.raises(IDXError, match="compressed"):
        read_idx(io.BytesIO(raw))


def test_idx_round_trip_still_exact(tmp_path):
    for dtype in (np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64):
        a = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
        for name in ("a.idx", "a.idx.gz"):
            write_idx(tmp_path / name, a)
            np.testing.assert_array_equal(read_idx(tmp_path / name), a)


# --- model specs: compact text and JSON ------------------------------------------------------------
TOKENS = ["conv", "max", "avg", "dense", "drop", "bn", "act:", "in", "gap", "flatten", "k", "s", "x", "same",
          "valid", "nobias", ":relu", ":softmax", ":bogus", "0", "1", "3", ".", "5", "9" * 30, "9" * 5000, ",", " "]


@FUZZ
@given(st.one_of(st.text(max_size=60), st.lists(st.sampled_from(TOKENS), max_size=12).map("".join)))
@example("conv" + "9" * 5000 + "k3")  # int() refuses numbers this long with a plain ValueError
def test_compact_parser_parses_or_raises_spec_error(text):
    try:
        spec = compact.parse(text)
    except SpecError:
        return
    try:
        again = compact.parse(compact.format(spec))
    except SpecError:
        return  # a spec whose options the compact form cannot hold
    assert again == spec


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 2**70) | st.floats(allow_nan=True) | st.text(max_size=12)
    | st.sampled_from(["Conv2D", "Dense", "relu", "same", "valid", "MaxPooling2D", "BatchNormalization", "a b"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["type", "filters", "kernel_size", "strides", "padding", "activation", "units", "rate",
                         "momentum", "epsilon", "name", "input_shape", "pool_size", "use_bias", "layers"]) | st.text(max_size=5),
        inner, max_size=5),
    max_leaves=20)


@st.composite
def model_dicts(draw):
    layers_ = draw(st.lists(JSON_VALUES, max_size=5))
    if draw(st.booleans()):  # mostly-valid layers with one hostile argument
        layer = {"type": draw(st.sampled_from(list(layers.LAYER_TYPES)))}
        layer[draw(st.sampled_from(["filters", "units", "rate", "momentum", "epsilon", "name", "kernel_size",
                                    "pool_size", "strides", "activation", "padding"]))] = draw(JSON_VALUES)
        layers_.append(layer)
    return {"input_shape": draw(JSON_VALUES), "layers": layers_, **draw(st.dictionaries(st.text(max_size=4), JSON_VALUES, max_size=1))}


@FUZZ
@given(st.one_of(model_dicts(), JSON_VALUES))
def test_json_model_parser_builds_or_raises_spec_error(d):
    try:
        spec = ModelSpec.from_dict(d)
        spec.shapes()
    except SpecError:
        return
    assert ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_json_model_file_nested_too_deep_is_a_spec_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(SpecError):
        zoo.resolve(str(path))


# --- images ------------------------------------------------------------------------------------------
def encoded(fmt: str, mode: str, size: tuple[int, int]) -> bytes:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8), "RGBA").convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


SEEDS = [(fmt, mode) for fmt, modes in {"PNG": ["L", "RGB", "RGBA", "P", "1", "I;16", "LA"], "JPEG": ["L", "RGB", "CMYK"],
                                        "GIF": ["P", "L"], "BMP": ["RGB", "L", "1"], "TIFF": ["RGB", "I;16", "F", "CMYK"],
                                        "WEBP": ["RGB", "RGBA"], "PPM": ["RGB", "L"], "ICO": ["RGBA"]}.items()
         for mode in modes]


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the corrupt EXIF it skips
@FUZZ
@given(st.sampled_from(SEEDS), st.tuples(st.integers(1, 40), st.integers(1, 40)), st.data())
def test_image_decoding_loads_or_raises_image_error(tmp_path, seed, size, data):
    fmt, mode = seed
    raw = mutate(encoded(fmt, mode, size), data.draw)
    path = tmp_path / f"x.{fmt.lower()}"
    path.write_bytes(raw)
    shape = data.draw(st.sampled_from([(28, 28, 1), (32, 32, 3)]))
    with memory_cap():
        try:
            img = open_image(path)
            x = to_model_input(img, shape, {"mnist_style": data.draw(st.booleans())})
        except ImageError:
            return
    assert x.shape == shape and x.dtype == np.uint8


def test_image_modes_pillow_cannot_convert_and_sparse_ink(tmp_path):
    Image.new("LAB", (4, 4)).save(tmp_path / "lab.tif")
    with pytest.raises(ImageError, match="LAB"):
        to_model_input(open_image(tmp_path / "lab.tif"), (8, 8, 1))
    dots = np.zeros((3000, 3000), np.uint8)
    dots[0, 0] = dots[-1, -1] = 255  # two specks: shrunk to 20x20 they vanish
    assert to_model_input(Image.fromarray(dots), (28, 28, 1), {"mnist_style": True}).shape == (28, 28, 1)


def test_image_header_claiming_many_pixels_in_a_tiny_file_is_refused(tmp_path):
    """A PNG header saying 7000x7000 over a few bytes of data would make Pillow allocate ~150 MB."""
    buf = io.BytesIO()
    Image.new("RGB", (7000, 7000)).save(buf, "PNG")  # ~150 kB of zeros: honest
    honest = buf.getvalue()
    (tmp_path / "honest.png").write_bytes(honest)
    assert open_image(tmp_path / "honest.png").size == (7000, 7000)
    (tmp_path / "liar.png").write_bytes(honest[:200])
    with memory_cap(64 << 20), pytest.raises(ImageError, match="pixels"):
        open_image(tmp_path / "liar.png")


# --- model files and checkpoints ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> bytes:
    spec = compact.parse("in8x8x1 conv4k3:relu bn max2 flatten dense3:softmax")
    module = build(spec)
    keras_init_(module, 0)
    path = tmp_path_factory.mktemp("m") / "m.safetensors"
    model_io.save_model(path, spec, module, ["a", "b", "c"], {"scale": 255})
    return path.read_bytes()


def signed(meta: dict) -> dict:
    """The metadata with its digest recomputed: an edit made on purpose reaches the checks behind the digest's."""
    return {**meta, "metadata_sha256": model_io.metadata_digest(meta)}


def with_metadata(raw: bytes, edit) -> bytes:
    """The same tensors with the cnnlab metadata (a JSON string) rewritten by `edit`."""
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header["__metadata__"]["cnnlab"] = edit(header["__metadata__"]["cnnlab"])
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + raw[8 + n:]


@FUZZ
@given(st.data())
def test_model_file_loads_or_raises_model_file_error(tmp_path, model_file, data):
    kind = data.draw(st.sampled_from(["bytes", "meta", "spec"]))
    if kind == "bytes":
        raw = mutate(model_file, data.draw)
    elif kind == "meta":
        raw = with_metadata(model_file, lambda _: data.draw(st.one_of(st.text(max_size=30), JSON_VALUES.map(json.dumps))))
    else:
        def edit(text):
            meta = json.loads(text)
            meta[data.draw(st.sampled_from(["spec", "class_names", "preprocessing", "format_version", "name"]))] = \
                data.draw(st.one_of(JSON_VALUES, model_dicts()))
            return json.dumps(signed(meta) if data.draw(st.booleans()) else meta)
        raw = with_metadata(model_file, edit)
    path = tmp_path / "m.safetensors"
    path.write_bytes(raw)
    with memory_cap():
        try:
            saved = model_io.read_model(path)
            module = saved.module()
        except ModelFileError:
            return
    assert isinstance(module, torch.nn.Module) and len(saved.class_names) == saved.spec.shapes()[-1][-1]


def test_model_file_whose_spec_claims_huge_layers_is_refused_before_building(tmp_path, model_file):
    def huge(text):
        meta = json.loads(text)
        meta["spec"] = {"input_shape": [8, 8, 1], "layers": [{"type": "Conv2D", "filters": 50_000, "kernel_size": 3},
                                                             {"type": "Flatten"}, {"type": "Dense", "units": 3}]}
        return json.dumps(signed(meta))
    (tmp_path / "m.safetensors").write_bytes(with_metadata(model_file, huge))
    with memory_cap(64 << 20), pytest.raises(ModelFileError, match="parameters"):
        model_io.read_model(tmp_path / "m.safetensors")


def test_model_file_metadata_nested_too_deep(tmp_path, model_file):
    (tmp_path / "m.safetensors").write_bytes(with_metadata(model_file, lambda _: "[" * 50_000 + "]" * 50_000))
    with pytest.raises(ModelFileError):
        model_io.read_model(tmp_path / "m.safetensors")
