"""Downloads and remote datasets, offline: every request goes to a server on 127.0.0.1 started here."""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import re
import socket
import struct
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from cnnlab.datasets.download import DownloadError, cache_dir, fetch
from cnnlab.datasets.remote import REMOTE, RemoteFile, is_downloaded, load_remote

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


# ---- remote datasets, on tiny synthetic archives with the real layout -------------------------


def _idx(array: np.ndarray) -> bytes:
    """A gzip IDX file of uint8 data, written independently of cnnlab's own writer."""
    header = struct.pack(f">HBB{array.ndim}I", 0, 0x08, array.ndim, *array.shape)
    return gzip.compress(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes(), mtime=0)


def _tar_gz(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out.getvalue()


def _pattern(n: int, h: int, w: int, c: int, seed: int) -> np.ndarray:
    """Images (N, H, W, C) where every position and channel holds a different, known value."""
    n_i, h_i, w_i, c_i = np.indices((n, h, w, c))
    return ((seed + n_i * 7 + h_i * 5 + w_i * 3 + c_i * 101) % 256).astype(np.uint8)


def _cifar10_files() -> tuple[dict[str, bytes], tuple[np.ndarray, ...]]:
    """Two records per batch; pixels stored as R, G, B planes after the label byte, as on disk."""
    x_train, x_test = _pattern(10, 32, 32, 3, seed=1), _pattern(2, 32, 32, 3, seed=2)
    y_train, y_test = np.arange(10) % 10, np.array([9, 3])

    def batch(x: np.ndarray, y: np.ndarray) -> bytes:
        planes = x.transpose(0, 3, 1, 2).reshape(len(x), 3072)  # (N, C*H*W), channel-major
        return np.concatenate([y[:, None].astype(np.uint8), planes], axis=1).tobytes()

    members = {f"cifar-10-batches-bin/data_batch_{i + 1}.bin": batch(x_train[2 * i:2 * i + 2], y_train[2 * i:2 * i + 2])
               for i in range(5)}
    members["cifar-10-batches-bin/test_batch.bin"] = batch(x_test, y_test)
    members["cifar-10-batches-bin/batches.meta.txt"] = b"airplane\nautomobile\n"
    return {"cifar-10-binary.tar.gz": _tar_gz(members)}, (x_train, y_train, x_test, y_test)


def _kmnist_files() -> tuple[dict[str, bytes], tuple[np.ndarray, ...]]:
    x_train, x_test = _pattern(6, 28, 28, 1, seed=3), _pattern(3, 28, 28, 1, seed=4)
    y_train, y_test = np.array([0, 1, 2, 7, 8, 9]), np.array([5, 4, 3])
    files = {
        "train-images-idx3-ubyte.gz": _idx(x_train[..., 0]),
        "train-labels-idx1-ubyte.gz": _idx(y_train),
        "t10k-images-idx3-ubyte.gz": _idx(x_test[..., 0]),
        "t10k-labels-idx1-ubyte.gz": _idx(y_test),
    }
    return files, (x_train, y_train, x_test, y_test)


def _emnist_digits_files() -> tuple[dict[str, bytes], tuple[np.ndarray, ...]]:
    x_train, x_test = _pattern(4, 28, 28, 1, seed=5), _pattern(2, 28, 28, 1, seed=6)
    y_train, y_test = np.array([3, 1, 4, 1]), np.array([5, 9])
    members = {}
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        # EMNIST stores images transposed: the loader must turn them back.
        members[f"gzip/emnist-digits-{split}-images-idx3-ubyte.gz"] = _idx(x[..., 0].transpose(0, 2, 1))
        members[f"gzip/emnist-digits-{split}-labels-idx1-ubyte.gz"] = _idx(y)
    members["gzip/emnist-letters-train-labels-idx1-ubyte.gz"] = _idx(np.array([1]))  # ignored neighbour
    return {"gzip.zip": _zip(members)}, (x_train, y_train, x_test, y_test)


SYNTHETIC = {"cifar10": _cifar10_files, "kmnist": _kmnist_files, "emnist-digits": _emnist_digits_files}


def test_every_remote_dataset_has_a_synthetic_test() -> None:
    assert set(SYNTHETIC) == set(REMOTE)


@pytest.mark.parametrize("name", sorted(REMOTE))
def test_registry_entries_are_complete(name: str) -> None:
    spec = REMOTE[name]
    assert len(spec.class_names) == 10 and len(set(spec.class_names)) == 10
    for file in spec.files:
        assert file.url.startswith(("http://", "https://")) and file.url.endswith(file.name)
        assert file.size and file.size > 0
        assert file.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", file.sha256)
        assert file.md5 is None or re.fullmatch(r"[0-9a-f]{32}", file.md5)
        assert file.sha256 or file.md5, f"{name}: {file.name} has no checksum"


def _serve(server: FileServer, name: str):
    """Serve the synthetic files and return a registry whose `name` points at them."""
    files, expected = SYNTHETIC[name]()
    spec = REMOTE[name]
    assert {f.name for f in spec.files} == set(files)
    local = []
    for file in spec.files:
        data = files[file.name]
        server.files[f"/{name}/{file.name}"] = data
        local.append(RemoteFile(file.name, server.url(f"{name}/{file.name}"), size=len(data),
                                sha256=hashlib.sha256(data).hexdigest()))
    counts = (len(expected[0]), len(expected[2]))
    return {name: dataclasses.replace(spec, files=tuple(local), counts=counts)}, expected


@pytest.mark.parametrize("name", sorted(REMOTE))
def test_load_remote_downloads_and_parses(server: FileServer, tmp_path: Path, name: str) -> None:
    sources, (x_train, y_train, x_test, y_test) = _serve(server, name)
    x_tr, y_tr, x_te, y_te, classes = load_remote(name, data_dir=tmp_path, sources=sources, progress=False)
    assert classes == REMOTE[name].class_names
    for got, want in ((x_tr, x_train), (x_te, x_test)):
        assert got.dtype == np.uint8 and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    for got, want in ((y_tr, y_train), (y_te, y_test)):
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, want)
    assert is_downloaded(name, data_dir=tmp_path, sources=sources)

    requests = len(server.ranges)
    again = load_remote(name, data_dir=tmp_path, sources=sources, download=False)
    assert len(server.ranges) == requests  # read from the folder, nothing fetched
    np.testing.assert_array_equal(again[0], x_tr)


def test_load_remote_uses_cnnlab_data(server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sources, _ = _serve(server, "emnist-digits")
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path))
    load_remote("emnist-digits", sources=sources, progress=False)
    assert (tmp_path / REMOTE["emnist-digits"].folder / "gzip.zip").is_file()


def test_wrong_counts_are_reported(server: FileServer, tmp_path: Path) -> None:
    sources, _ = _serve(server, "cifar10")
    sources["cifar10"] = dataclasses.replace(sources["cifar10"], counts=(50_000, 2))
    with pytest.raises(ValueError, match=r"expected train images \(50000, 32, 32, 3\).*got \(10, 32, 32, 3\)"):
        load_remote("cifar10", data_dir=tmp_path, sources=sources, progress=False)


def test_labels_outside_the_classes_are_reported(server: FileServer, tmp_path: Path) -> None:
    sources, _ = _serve(server, "cifar10")
    sources["cifar10"] = dataclasses.replace(sources["cifar10"], class_names=("a", "b", "c"))
    with pytest.raises(ValueError, match=r"train labels span 0..9, expected 0..2"):
        load_remote("cifar10", data_dir=tmp_path, sources=sources, progress=False)


def test_cifar10_rejects_a_torn_record(server: FileServer, tmp_path: Path) -> None:
    files, _ = _cifar10_files()
    spec = REMOTE["cifar10"]
    with tarfile.open(fileobj=io.BytesIO(files["cifar-10-binary.tar.gz"])) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}
    members["cifar-10-batches-bin/test_batch.bin"] += b"\x01"
    (tmp_path / "cifar-10-binary.tar.gz").write_bytes(_tar_gz(members))
    sources = {"cifar10": dataclasses.replace(spec, files=(dataclasses.replace(spec.files[0], size=None),))}
    with pytest.raises(ValueError, match="test_batch.bin: 6147 bytes is not a whole number of 3073-byte"):
        load_remote("cifar10", data_dir=tmp_path, sources=sources, download=False)


def test_missing_files_without_download(tmp_path: Path) -> None:
    assert not is_downloaded("kmnist", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "train-images-idx3-ubyte.gz"))):
        load_remote("kmnist", data_dir=tmp_path, download=False)


def test_wrong_size_copy_is_reported(tmp_path: Path) -> None:
    (tmp_path / "gzip.zip").write_bytes(b"not the archive")
    with pytest.raises(ValueError, match="has 15 bytes, expected 561753746"):
        load_remote("emnist-digits", data_dir=tmp_path, download=False)


def test_unknown_name_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="'cifar100'.*cifar10, kmnist, emnist-digits"):
        load_remote("cifar100")
