"""The server under the app (cnnlab.web.server): a real uvicorn on loopback, hit with raw sockets as slow and
oversized clients would, with the head deadline shortened to keep the test fast."""
from __future__ import annotations

import socket
import time

import pytest

pytest.importorskip("uvicorn", reason="the web extra is not installed (pip install 'cnnlab[web]')")
pytest.importorskip("httptools", reason="the head deadline is built on uvicorn's httptools protocol")
import web_support  # noqa: E402

from cnnlab.web import server  # noqa: E402

DEADLINE = 0.5


async def hello(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture(scope="module")
def port():
    with web_support.uvicorn_in_thread(server.config(hello, "127.0.0.1", 0, head_seconds=DEADLINE)) as port:
        yield port


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def read_all(conn: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started, data = time.monotonic(), b""
    while chunk := conn.recv(65536):
        data += chunk
    return data, time.monotonic() - started


GET = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def test_a_normal_request_is_answered(port):
    with connect(port) as conn:
        conn.sendall(GET.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        data, _ = read_all(conn)
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"ok")


@pytest.mark.parametrize("sent", [b"", b"GET / HTTP/1.1\r\nHost: 127.", b"GET / HTTP/1.1\r\n"])
def test_a_head_that_never_completes_is_cut_off(port, sent):
    with connect(port) as conn:
        conn.sendall(sent)
        data, seconds = read_all(conn)
    assert data == b"" and DEADLINE * 0.8 <= seconds < DEADLINE + 3


def test_a_slow_head_on_a_kept_alive_connection_is_cut_off(port):
    with connect(port) as conn:
        conn.sendall(GET)
        assert conn.recv(65536).startswith(b"HTTP/1.1 200")
        conn.sendall(b"GET / HTTP/1.1\r\nHo")  # the next request starts and stalls
        data, seconds = read_all(conn)
    assert data == b"" and seconds < DEADLINE + 3


def test_a_head_trickling_in_byte_by_byte_is_cut_off_despite_each_byte(port):
    with connect(port) as conn:
        started = time.monotonic()
        try:
            for byte in b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100:
                conn.sendall(bytes([byte]))
                time.sleep(0.05)
        except OSError:  # the server closed the connection while bytes were still being sent
            pass
        read_all(conn)
    assert time.monotonic() - started < DEADLINE + 3


@pytest.mark.parametrize("where", ["header", "url"])
def test_an_oversized_head_is_refused_with_400(port, where):
    big = b"a" * (server.MAX_HEAD_BYTES + 1)
    head = (b"GET /?q=" + big + b" HTTP/1.1\r\nHost: x\r\n\r\n" if where == "url"
            else b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + big + b"\r\n\r\n")
    with connect(port) as conn:
        conn.sendall(head)
        data, _ = read_all(conn)
    assert data.startswith(b"HTTP/1.1 400")


def test_a_large_body_after_a_small_head_is_not_counted_as_head(port):
    body = b"x" * (4 * server.MAX_HEAD_BYTES)
    with connect(port) as conn:
        conn.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        data, _ = read_all(conn)
    assert data.startswith(b"HTTP/1.1 200")
