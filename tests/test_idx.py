"""IDX reader/writer: round trips for every dtype, and every kind of corruption gives IDXError."""
import gzip
import io
import struct

import numpy as np
import pytest

from cnnlab.datasets.idx import DTYPES, IDXError, read_idx, write_idx


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_round_trip(tmp_path, dtype, name):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    write_idx(tmp_path / name, array)
    back = read_idx(tmp_path / name)
    assert back.dtype == np.dtype(dtype) and back.shape == (3, 4, 5)
    np.testing.assert_array_equal(back, array)


def test_big_endian_on_disk(tmp_path):
    write_idx(tmp_path / "x", np.array([1, 256], dtype=np.int16))
    raw = (tmp_path / "x").read_bytes()
    assert raw == bytes([0, 0, 0x0B, 1]) + struct.pack(">I", 2) + bytes([0, 1, 1, 0])


def _idx(code=0x08, dims=(2, 3), data=None):
    data = bytes(range(int(np.prod(dims)))) if data is None else data
    return struct.pack(f">HBB{len(dims)}I", 0, code, len(dims), *dims) + data


CORRUPT = {
    "empty": (b"", "too short"),
    "short header": (b"\x00\x00", "too short"),
    "bad magic": (b"\x01\x02\x08\x01" + b"\x00" * 8, "bad magic"),
    "unknown dtype": (_idx(code=0x07), "dtype code 0x07"),
    "zero dims": (b"\x00\x00\x08\x00", "0 dimensions"),
    "too many dims": (b"\x00\x00\x08\x09" + b"\x00" * 36, "9 dimensions"),
    "cut in dims": (b"\x00\x00\x08\x03" + b"\x00\x00\x00\x02", "dimension list"),
    "truncated data": (_idx(dims=(2, 3), data=b"\x00" * 5), "truncated"),
    "trailing bytes": (_idx(dims=(2, 3), data=b"\x00" * 7), "trailing"),
    "huge claim": (struct.pack(">HBB3I", 0, 0x0E, 3, 60000, 60000, 60000) + b"\x00" * 16, "limit"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
@pytest.mark.parametrize("compressed", [False, True])
def test_corrupt_files_raise_clear_errors(case, compressed):
    raw, message = CORRUPT[case]
    blob = gzip.compress(raw) if compressed else raw
    with pytest.raises(IDXError, match=message):
        read_idx(io.BytesIO(blob))


def test_corrupt_gzip_stream():
    blob = gzip.compress(_idx(dims=(100, 100), data=bytes(10000)))
    with pytest.raises(IDXError, match="compressed"):
        read_idx(io.BytesIO(blob[:-30]))
    damaged = bytearray(blob)
    damaged[20:40] = b"\xff" * 20
    with pytest.raises(IDXError):
        read_idx(io.BytesIO(bytes(damaged)))


def test_every_dtype_code_is_readable():
    for code, dtype in DTYPES.items():
        values = np.arange(4).astype(dtype)
        raw = struct.pack(">HBBI", 0, code, 1, 4) + values.tobytes()
        np.testing.assert_array_equal(read_idx(io.BytesIO(raw)), np.arange(4))


def test_write_refuses_unsupported_dtype(tmp_path):
    with pytest.raises(IDXError, match="uint8"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.uint64))
