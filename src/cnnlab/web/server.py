"""The HTTP server under the app: uvicorn with bounds for slow and idle clients, and a deadline for request heads.

Slow clients: an idle keep-alive connection closes after KEEP_ALIVE_S; a request head (request line and headers)
over MAX_HEAD_BYTES is refused with 400, and one that has not all arrived HEAD_SECONDS after the connection opened
or the request began is cut off (uvicorn has neither bound with httptools, its fast parser: a client could hold a
connection by sending a header byte a minute, or grow one header without end); the app's BodyRead guard cuts off
a body still trickling in after 10 s. LIMIT_CONCURRENCY bounds open connections and tasks; beyond it uvicorn
answers 503 instead of queueing without end.
"""
from __future__ import annotations

import asyncio
import errno
import gc
import socket
from typing import Any, Callable

import uvicorn

HEAD_SECONDS = 10.0
KEEP_ALIVE_S = 5
LIMIT_CONCURRENCY = 512
MAX_HEAD_BYTES = 16 * 1024


class HeadTooLarge(Exception):
    """Raised inside the parser's callback: httptools turns it into a parser error, uvicorn into a 400."""


def _head_deadline_protocol(seconds: float, max_bytes: int) -> type[asyncio.Protocol] | None:
    """uvicorn's httptools protocol with a deadline and a size bound on each request head; None without httptools
    (uvicorn's h11 protocol then, which bounds the size itself but has no deadline)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return None

    class HeadDeadline(HttpToolsProtocol):  # type: ignore[misc]
        _head_timer: asyncio.TimerHandle | None = None
        _head_bytes = 0

        def _arm(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(seconds, self._too_slow)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _too_slow(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()  # a connection that never sends a request is also held no longer

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_bytes = 0
            self._arm()  # the next request on a kept-alive connection

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value))
            super().on_header(name, value)

        def _count(self, n: int) -> None:
            self._head_bytes += n
            if self._head_bytes > max_bytes:
                raise HeadTooLarge(f"request head over {max_bytes} bytes")

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeadDeadline


def config(app: Any, host: str, port: int, head_seconds: float = HEAD_SECONDS) -> uvicorn.Config:
    """uvicorn's settings for `cnnlab serve`: quiet logs, the bounds above, 3 s to finish requests on Ctrl-C."""
    # An open event stream would otherwise hold Ctrl-C until training ends; after 3 s the app's shutdown
    # stops the job, which still saves its run folder.
    protocol = _head_deadline_protocol(head_seconds, MAX_HEAD_BYTES)
    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, http=protocol or "auto",
                          timeout_graceful_shutdown=3, timeout_keep_alive=KEEP_ALIVE_S,
                          h11_max_incomplete_event_size=MAX_HEAD_BYTES, limit_concurrency=LIMIT_CONCURRENCY,
                          backlog=LIMIT_CONCURRENCY)


class _Server(uvicorn.Server):
    """uvicorn's server that also calls `on_stop` as soon as SIGTERM or Ctrl-C arrives, before it waits for
    requests in flight: decodes waiting for memory are refused then instead of holding the exit."""

    def __init__(self, config: uvicorn.Config, on_stop: Callable[[], None] | None):
        super().__init__(config)
        self.on_stop = on_stop

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.on_stop is not None:
            self.on_stop()
        super().handle_exit(sig, frame)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port), bound before the server says where it serves; a busy port or an
    address this computer does not have is one OSError line instead of uvicorn's log after the announcement."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise OSError(f"cannot listen on --host {host!r}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a restart needs no wait
        sock.bind(address)
        sock.listen(LIMIT_CONCURRENCY)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise OSError(f"port {port} on {host} is already in use (another server, or another cnnlab serve); "
                          "choose another with --port") from None
        raise OSError(f"cannot listen on {host} port {port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def serve(app: Any, host: str, port: int, on_stop: Callable[[], None] | None = None,
          sock: socket.socket | None = None) -> None:
    """Run the app until Ctrl-C or SIGTERM on `sock` (from `bind`; default: bind host and port now);
    `on_stop` is called when either signal arrives."""
    # The ~250k objects of torch, FastAPI and the model never die; a full garbage collection walks them all
    # (~130 ms on a 2-core machine) and stalls every request in flight. Frozen, collections see only new objects.
    gc.collect()
    gc.freeze()
    _Server(config(app, host, port), on_stop).run(sockets=[sock or bind(host, port)])
