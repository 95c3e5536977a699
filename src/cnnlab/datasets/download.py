"""Download one file into the cnnlab cache: resumable, checksummed, never half-written.

The final file only appears (by ``os.replace``) once every byte has arrived, been
synced to disk and matched its checksum; until then the bytes live in
``<dest>.part``, which the next call resumes with an HTTP ``Range`` request.
Standard library only, so a download works wherever cnnlab imports.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

from cnnlab.fsutil import fsync_dir

__all__ = ["DownloadError", "cache_dir", "fetch", "file_digest"]

_CHUNK = 1 << 20  # 1 MiB: large enough for speed, small enough for a smooth bar
_USER_AGENT = "cnnlab/0.1"


class DownloadError(OSError):
    """A file could not be fetched or did not match its checksum."""


def cache_dir() -> Path:
    """Root of the dataset cache; each dataset lives in ``<root>/<name>/``.

    ``$CNNLAB_DATA`` wins, so a class can share one read-only copy; then the XDG
    cache folder, as other tools on Linux use it.
    """
    explicit = os.environ.get("CNNLAB_DATA")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says relative values are invalid and must be ignored.
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "cnnlab"
    return Path.home() / ".cache" / "cnnlab"


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in chunks so a 500 MB archive needs no 500 MB of memory."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _local_copy_hint(dest: Path) -> str:
    return (
        f"to use a copy you already have, put {dest.name} in {dest.parent}/ "
        f"(or set CNNLAB_DATA to a folder that holds {dest.parent.name}/{dest.name})"
    )


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _resumes_at(response: http.client.HTTPResponse, offset: int) -> bool:
    """True when the server honoured our Range request from exactly ``offset``."""
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return bool(match) and int(match.group(1)) == offset


def _start(url: str, offset: int, timeout: float) -> tuple[http.client.HTTPResponse, int]:
    """Open the download, resuming at ``offset`` when the server allows; returns (response, offset)."""
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as err:
        if err.code != 416 or not offset:
            raise
        # 416: the part is no prefix of the file (it changed upstream, or is too long).
        err.close()
        return _open(url, 0, timeout), 0
    if response.status == 206 and not _resumes_at(response, offset):
        response.close()  # a range we did not ask for: fetch the whole file instead
        return _open(url, 0, timeout), 0
    if response.status != 206:
        offset = 0  # the server ignored Range and sends the whole file
    return response, offset


def _progress_bar(enabled: bool):
    """A rich progress bar on an interactive stderr, else None (logs and CI stay clean)."""
    if not (enabled and sys.stderr.isatty()):
        return None
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )


def _copy(response: http.client.HTTPResponse, out: BinaryIO, done: int, total: int | None,
          name: str, progress: bool) -> int:
    """Stream the body into ``out``; returns the number of bytes now in the file."""
    bar = _progress_bar(progress)
    with bar if bar is not None else contextlib.nullcontext():
        task = bar.add_task(name, total=total, completed=done) if bar is not None else None
        while chunk := response.read(_CHUNK):
            out.write(chunk)
            done += len(chunk)
            if bar is not None:
                bar.update(task, completed=done)
    return done


def _download_part(url: str, part: Path, dest: Path, timeout: float, progress: bool) -> None:
    offset = part.stat().st_size if part.exists() else 0
    hint = _local_copy_hint(dest)
    try:
        response, offset = _start(url, offset, timeout)
        with response:
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            with open(part, "ab" if offset else "wb") as out:
                try:
                    done = _copy(response, out, offset, total, dest.name, progress)
                finally:
                    # Keep whatever arrived on disk so the next call can resume from it.
                    out.flush()
                    os.fsync(out.fileno())
    except urllib.error.HTTPError as err:
        raise DownloadError(f"cannot download {url}: server answered {err.code} {err.reason}; {hint}") from err
    except urllib.error.URLError as err:
        raise DownloadError(
            f"cannot download {url} (offline or server unreachable: {err.reason}); {hint}"
        ) from err
    except (OSError, http.client.HTTPException) as err:
        got = part.stat().st_size if part.exists() else 0
        raise DownloadError(
            f"download of {url} broke off after {got} bytes ({type(err).__name__}: {err}); "
            f"run again to resume, or {hint}"
        ) from err
    if total is not None and done != total:
        raise DownloadError(
            f"download of {url} stopped at {done} of {total} bytes; run again to resume, or {hint}"
        )


def fetch(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    size: int | None = None,
    progress: bool = True,
    timeout: float = 30,
) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``.

    Bytes go to ``<dest>.part`` first; a part left by an interrupted call is
    resumed. Each given check (``size`` in bytes, ``sha256``, ``md5``) must pass
    before the file is moved into place; on a mismatch the part is deleted so the
    next call starts clean. Raises ``DownloadError`` for every network or
    checksum failure, with a hint on how to supply a local copy instead.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    _download_part(url, part, dest, timeout, progress)

    got_size = part.stat().st_size
    if size is not None and got_size != size:
        part.unlink()
        raise DownloadError(f"download of {url} has {got_size} bytes, expected {size}; deleted it, run again")
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected is None:
            continue
        actual = file_digest(part, algorithm)
        if actual != expected.lower():
            part.unlink()
            raise DownloadError(
                f"{algorithm} mismatch for {url}: expected {expected}, got {actual}; deleted the download"
            )
    os.replace(part, dest)
    fsync_dir(dest.parent)
    return dest
