"""A per-file cache of embeddings, written in chunks as they are computed, so a stopped run resumes.

Each file is keyed by its absolute path, size, mtime_ns, ctime_ns, device and inode (see `file_key`; a file
changed in the last seconds by its content too). A stat key
costs no read of the file: a content digest would read every byte of a 100 GB repository on each run just to
learn that nothing changed. The stat key still misses no real change: writing a file moves its mtime and its
ctime, and ctime cannot be set back from user space (`touch -d`, `cp -p` and `rsync -t` restore mtime only);
replacing a file by a rename changes its inode. The price: a moved or copied folder is embedded again.

The cache folder of one embedder holds `*.npz` chunks of `keys` (strings) and `vectors` (float32 rows),
each written atomically: a run killed mid-way loses at most its last unwritten chunk. Entries of files that
changed stay behind as dead rows (they can never match again); delete the folder to reclaim the space.
"""
from __future__ import annotations

import io
import itertools
import os
import time
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from cnnlab.fsutil import RACY_NS, atomic_write_bytes, file_sha256

CHUNK_ROWS = 256  # rows a chunk file (the caller flushes whole batches at this): at most this many are lost when a run is killed


def file_key(path: Path) -> str | None:
    """`path|size|mtime_ns|ctime_ns|device|inode` of a file as it is now (not following a final symlink), or
    None when it cannot be stat'ed. A file changed less than RACY_NS ago could be rewritten again within the
    clock tick of that change and keep every stamp, so its key also holds its content's SHA-256 (as the
    folder cache checks such files, `cnnlab.datasets.folders.cache`); once older, its stamps alone decide."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    key = f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_dev}|{st.st_ino}"
    if max(st.st_mtime_ns, st.st_ctime_ns) >= time.time_ns() - RACY_NS:
        digest = file_sha256(path)
        if digest is None:
            return None
        key += f"|sha256:{digest}"
    return key


class EmbeddingCache:
    """Lookup of cached rows by file key, and chunked appends of new ones, in one folder."""

    _counter = itertools.count()

    def __init__(self, folder: Path, dim: int):
        self.folder, self.dim = Path(folder), dim
        self.pending_keys: list[str] = []
        self.pending_rows: list[np.ndarray] = []

    def _chunks(self) -> list[Path]:
        return sorted(self.folder.glob("*.npz")) if self.folder.is_dir() else []

    def fill(self, keys: Sequence[str | None], out: np.ndarray) -> np.ndarray:
        """Copy the cached rows of `keys` into `out` (N, dim); returns a bool mask of the rows found.

        Only one chunk's vectors are in memory at a time, and only for chunks holding a wanted key.
        """
        wanted = {k: i for i, k in enumerate(keys) if k is not None}
        found = np.zeros(len(keys), dtype=bool)
        for chunk in self._chunks():
            if not wanted:
                break
            try:
                with np.load(chunk, allow_pickle=False) as z:
                    chunk_keys = z["keys"]
                    rows = [(wanted.pop(str(k)), j) for j, k in enumerate(chunk_keys) if str(k) in wanted]
                    if not rows:
                        continue
                    vectors = z["vectors"]
                    if vectors.shape[1] != self.dim:
                        continue
                    for i, j in rows:
                        out[i], found[i] = vectors[j], True
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # a damaged chunk: its rows again
                continue
        return found

    def add(self, key: str | None, row: np.ndarray) -> None:
        if key is None:
            return
        self.pending_keys.append(key)
        self.pending_rows.append(np.asarray(row, dtype=np.float32))

    def flush(self) -> None:
        """Write the rows added since the last flush as one new chunk (atomically); an unwritable cache
        folder only costs speed next time."""
        if not self.pending_keys:
            return
        buf = io.BytesIO()
        np.savez(buf, keys=np.array(self.pending_keys), vectors=np.stack(self.pending_rows))
        name = f"{time.time_ns()}-{os.getpid()}-{next(self._counter)}.npz"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.folder / name, buf.getvalue())
        except OSError:
            pass
        self.pending_keys, self.pending_rows = [], []
