"""Downloads and remote datasets, offline: every request goes to a server on 127.0.0.1 started here."""
from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cnnlab.datasets.download import DownloadError, cache_dir, fetch

BODY = bytes(range(256)) * 1200  # 307,200 bytes: several chunks, cheap to hash


class FileServer:
    """Serves `files` (URL path -> bytes), honours `Range: bytes=N-`, records every Range header.

    `cut_after = K` makes the next response announce the full length but send only K bytes and
    close, as a dropped connection does; `ignore_range` answers 200 with the whole file, as
    servers without Range support do.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.ranges: list[str | None] = []
        self.cut_after: int | None = None
        self.ignore_range = False
        self.base = ""

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}"


def _handler(state: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            body = state.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            wanted = self.headers.get("Range")
            state.ranges.append(wanted)
            start = 0
            if wanted and not state.ignore_range:
                start = int(re.fullmatch(r"bytes=(\d+)-", wanted).group(1))
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            payload = body[start:]
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if state.cut_after is not None:
                payload, state.cut_after = payload[: state.cut_after], None
                self.close_connection = True
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass  # keep pytest output clean

    return Handler


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # urllib honours *_proxy variables; a proxy must never see (or carry) these test requests.
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")


@pytest.fixture
def server():
    state = FileServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _part(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def test_fetch_downloads_and_verifies(server: FileServer, tmp_path: Path) -> None:
    server.files["/data.bin"] = BODY
    dest = tmp_path / "sub" / "data.bin"
    got = fetch(server.url("data.bin"), dest, sha256=hashlib.sha256(BODY).hexdigest(),
                md5=hashlib.md5(BODY).hexdigest(), size=len(BODY), progress=False)
    assert got == dest
    assert dest.read_bytes() == BODY
    assert not _part(dest).exists()
    assert server.ranges == [None]


@pytest.mark.parametrize("check", ["sha256", "md5"])
def test_checksum_mismatch_leaves_nothing(server: FileServer, tmp_path: Path, check: str) -> None:
    server.files["/data.bin"] = BODY
    dest = tmp_path / "data.bin"
    wrong = "0" * (64 if check == "sha256" else 32)
    actual = hashlib.new(check, BODY).hexdigest()
    with pytest.raises(DownloadError) as err:
        fetch(server.url("data.bin"), dest, progress=False, **{check: wrong})
    message = str(err.value)
    assert server.url("data.bin") in message and wrong in message and actual in message
    assert "\n" not in message
    assert not dest.exists() and not _part(dest).exists()


def test_size_mismatch_leaves_nothing(server: FileServer, tmp_path: Path) -> None:
    server.files["/data.bin"] = BODY
    dest = tmp_path / "data.bin"
    with pytest.raises(DownloadError, match=f"{len(BODY)} bytes, expected 12"):
        fetch(server.url("data.bin"), dest, size=12, progress=False)
    assert not dest.exists() and not _part(dest).exists()


def test_cut_connection_then_resume(server: FileServer, tmp_path: Path) -> None:
    server.files["/data.bin"] = BODY
    dest = tmp_path / "data.bin"
    sha = hashlib.sha256(BODY).hexdigest()
    server.cut_after = 100_000
    with pytest.raises(DownloadError, match="run again to resume"):
        fetch(server.url("data.bin"), dest, sha256=sha, progress=False)
    assert not dest.exists()
    assert _part(dest).read_bytes() == BODY[:100_000]

    fetch(server.url("data.bin"), dest, sha256=sha, progress=False)
    assert server.ranges == [None, "bytes=100000-"]
    assert dest.read_bytes() == BODY
    assert not _part(dest).exists()


def test_server_ignoring_range_restarts_from_zero(server: FileServer, tmp_path: Path) -> None:
    server.files["/data.bin"] = BODY
    server.ignore_range = True
    dest = tmp_path / "data.bin"
    _part(dest).write_bytes(b"stale bytes that must not survive")
    fetch(server.url("data.bin"), dest, sha256=hashlib.sha256(BODY).hexdigest(), progress=False)
    assert server.ranges == ["bytes=33-"]
    assert dest.read_bytes() == BODY


def test_part_longer_than_file_restarts(server: FileServer, tmp_path: Path) -> None:
    server.files["/data.bin"] = BODY
    dest = tmp_path / "data.bin"
    _part(dest).write_bytes(BODY + b"extra")  # server answers 416 to a range past the end
    fetch(server.url("data.bin"), dest, sha256=hashlib.sha256(BODY).hexdigest(), progress=False)
    assert server.ranges == [f"bytes={len(BODY) + 5}-", None]
    assert dest.read_bytes() == BODY


def test_unreachable_server_says_how_to_use_a_local_copy(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port that was just free and now has no listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = tmp_path / "cifar10" / "cifar-10-binary.tar.gz"
    url = f"http://127.0.0.1:{port}/cifar-10-binary.tar.gz"
    with pytest.raises(DownloadError) as err:
        fetch(url, dest, progress=False, timeout=5)
    message = str(err.value)
    assert url in message and "unreachable" in message
    assert str(dest.parent) in message and "CNNLAB_DATA" in message
    assert not dest.exists() and not _part(dest).exists()


def test_missing_file_names_the_status(server: FileServer, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="404"):
        fetch(server.url("nope.bin"), tmp_path / "nope.bin", progress=False)


class _FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal(server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server.files["/data.bin"] = BODY
    monkeypatch.setattr(sys, "stderr", _FakeTerminal())
    fetch(server.url("data.bin"), tmp_path / "data.bin", progress=True)
    assert (tmp_path / "data.bin").read_bytes() == BODY
    assert "data.bin" in sys.stderr.getvalue()


def test_cache_dir_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "shared"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "shared"
    monkeypatch.delenv("CNNLAB_DATA")
    assert cache_dir() == tmp_path / "xdg" / "cnnlab"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec says: ignore
    assert cache_dir() == tmp_path / "home" / ".cache" / "cnnlab"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == tmp_path / "home" / ".cache" / "cnnlab"
