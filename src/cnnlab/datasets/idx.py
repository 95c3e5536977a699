"""Read and write IDX files (the MNIST format), plain or gzip, with strict header checks.

IDX layout: two zero bytes, a dtype code, the number of dimensions, then one big-endian
uint32 per dimension, then the data in C order, big-endian. The header is checked against
the file length *before* anything is allocated, so a corrupt header cannot ask for a huge array:
a plain file must hold every byte its header claims, and a gzip file can hold at most 1032 times
its own size (deflate's best possible ratio).
"""
from __future__ import annotations

import gzip
import io
import math
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
DEFLATE_MAX_RATIO = 1032  # RFC 1951: a deflate stream expands at most 1032:1


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
    start = f.tell()
    size = f.seek(0, io.SEEK_END) - start
    f.seek(start)
    compressed = f.read(2) == b"\x1f\x8b"
    f.seek(start)
    stream: BinaryIO = gzip.GzipFile(fileobj=f, mode="rb") if compressed else f
    room = size * DEFLATE_MAX_RATIO if compressed else size  # the most bytes this file can decode to
    try:
        return _parse(stream, name, max_bytes, room, compressed)
    except (EOFError, OSError, zlib.error) as exc:  # gzip errors on a corrupt or cut-off stream
        raise IDXError(f"{name}: corrupt or truncated compressed data ({exc})") from None


def _parse(stream: BinaryIO, name: str, max_bytes: int, room: int, compressed: bool) -> np.ndarray:
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
    span = math.prod(max(d, 1) for d in dims) * dtype.itemsize  # numpy refuses huge shapes even when empty
    nbytes = math.prod(dims) * dtype.itemsize
    if span > max_bytes:
        raise IDXError(f"{name}: header claims shape {dims} ({span:,} bytes), over the {max_bytes:,}-byte limit")
    if nbytes > room - 4 - 4 * ndim:
        why = (f"a {room // DEFLATE_MAX_RATIO:,}-byte compressed file cannot hold that many" if compressed
               else f"the file has {max(room - 4 - 4 * ndim, 0):,}")
        raise IDXError(f"{name}: truncated or corrupt: shape {dims} needs {nbytes:,} data bytes; {why}")
    data = bytearray(nbytes)  # justified by the file's size, checked above
    got = 0
    while got < nbytes:
        n = stream.readinto(memoryview(data)[got:])
        if not n:
            raise IDXError(f"{name}: truncated: shape {dims} needs {nbytes:,} data bytes, found {got:,}")
        got += n
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
