"""Read and write IDX files (the MNIST format), plain or gzip, with strict header checks.

IDX layout: two zero bytes, a dtype code, the number of dimensions, then one big-endian
uint32 per dimension, then the data in C order, big-endian. The header is checked against
the file length *before* anything is allocated, so a corrupt header cannot ask for a huge array.
"""
from __future__ import annotations

import gzip
import io
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from cnnlab.fsutil import atomic_write_bytes

# IDX dtype code -> numpy dtype (big-endian, as the format stores them)
DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
CODES = {dt.newbyteorder("="): code for code, dt in DTYPES.items()}
MAX_DIMS = 8
MAX_BYTES = 4 << 30  # refuse to decode more than 4 GiB: no real IDX file is that big


class IDXError(ValueError):
    """A file is not a valid IDX file (bad magic, dtype, dims or length)."""


def read_idx(source: str | os.PathLike | BinaryIO, *, max_bytes: int = MAX_BYTES) -> np.ndarray:
    """Read an IDX file (gzip detected from its first bytes) into a native-endian numpy array."""
    name = str(source) if isinstance(source, (str, os.PathLike)) else getattr(source, "name", "<stream>")
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            return _read(f, name, max_bytes)
    return _read(source, name, max_bytes)


def _read(f: BinaryIO, name: str, max_bytes: int) -> np.ndarray:
    head = f.read(2)
    f.seek(-len(head), io.SEEK_CUR)
    stream: BinaryIO = gzip.GzipFile(fileobj=f, mode="rb") if head == b"\x1f\x8b" else f
    try:
        return _parse(stream, name, max_bytes)
    except (EOFError, OSError, zlib.error) as exc:  # gzip errors on a corrupt or cut-off stream
        raise IDXError(f"{name}: corrupt or truncated compressed data ({exc})") from None


def _parse(stream: BinaryIO, name: str, max_bytes: int) -> np.ndarray:
    magic = stream.read(4)
    if len(magic) < 4:
        raise IDXError(f"{name}: file is {len(magic)} bytes, too short for an IDX header")
    zero, code, ndim = struct.unpack(">HBB", magic)
    if zero != 0:
        raise IDXError(f"{name}: bad magic {magic.hex()}: an IDX file starts with two zero bytes")
    if code not in DTYPES:
        raise IDXError(f"{name}: unknown IDX dtype code 0x{code:02x}, expected one of "
                       + ", ".join(f"0x{c:02x}" for c in DTYPES))
    if not 1 <= ndim <= MAX_DIMS:
        raise IDXError(f"{name}: {ndim} dimensions, expected 1 to {MAX_DIMS}")
    raw_dims = stream.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise IDXError(f"{name}: header cut off in the dimension list")
    dims = struct.unpack(f">{ndim}I", raw_dims)
    dtype = DTYPES[code]
    nbytes = int(np.prod(dims, dtype=np.uint64)) * dtype.itemsize if all(dims) else 0
    if nbytes > max_bytes:
        raise IDXError(f"{name}: header claims shape {dims} ({nbytes:,} bytes), over the {max_bytes:,}-byte limit")
    data = stream.read(nbytes)
    if len(data) != nbytes:
        raise IDXError(f"{name}: truncated: shape {dims} needs {nbytes:,} data bytes, found {len(data):,}")
    if stream.read(1):
        raise IDXError(f"{name}: trailing bytes after the {nbytes:,} data bytes of shape {dims}")
    return np.frombuffer(data, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray, *, compress: bool | None = None) -> None:
    """Write `array` as IDX; gzip when `compress` or (by default) when the name ends in .gz.

    Written to a temporary file and renamed, so a crash never leaves a half-written file.
    """
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in CODES:
        raise IDXError(f"cannot store dtype {array.dtype} in IDX; supported: uint8, int8, int16, int32, float32, float64")
    if not 1 <= array.ndim <= MAX_DIMS:
        raise IDXError(f"cannot store a {array.ndim}-d array in IDX, expected 1 to {MAX_DIMS} dimensions")
    code = CODES[native]
    payload = struct.pack(f">HBB{array.ndim}I", 0, code, array.ndim, *array.shape)
    payload += np.ascontiguousarray(array, dtype=DTYPES[code]).tobytes()
    path = Path(path)
    if compress is None:
        compress = path.suffix == ".gz"
    if compress:
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    atomic_write_bytes(path, payload)
