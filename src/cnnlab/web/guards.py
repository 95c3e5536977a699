"""ASGI guards: body size, read time and JSON depth limits, Host and Origin checks, security headers; the bind warning."""
from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

from cnnlab.jsonutil import json_depth

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The page loads nothing from elsewhere; the browser enforces that. /docs needs Swagger UI's inline script.
PAGE_POLICY = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
               "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


async def _reply(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")  # the methods whose bodies the guards bound and read


class BodyLimit:
    """Refuse request bodies over `max_bytes` before reading them (411 without a Content-Length).

    The server (uvicorn's h11) never delivers more bytes than Content-Length says, so checking the
    header is enough; chunked uploads of unknown size are refused rather than counted.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in STATE_CHANGING:
            headers = dict(scope["headers"])
            length = headers.get(b"content-length")
            if length is None:
                if headers.get(b"transfer-encoding"):
                    return await _reply(send, 411, "send a Content-Length header with the request body")
            elif not length.isdigit():
                return await _reply(send, 400, f"bad Content-Length {length.decode(errors='replace')!r}")
            elif int(length) > self.max_bytes:
                return await _reply(send, 413, f"the request body is {int(length):,} bytes; "
                                               f"the limit is {self.max_bytes:,}")
        await self.app(scope, receive, send)


MAX_JSON_DEPTH = 32  # a layer list is 3-4 deep; 9,000 nested brackets would overflow the parser's recursion
READ_SECONDS = 10.0  # a client that has not sent its whole body by then is cut off (slow-loris)


class BodyRead:
    """Read a request body within `seconds` (408 otherwise), refuse JSON nested over `max_depth` (400).

    The body is read here, before any parser runs, and handed on whole; BodyLimit (outside this guard)
    has bounded its size already. Later receive() calls (disconnects) pass through.
    """

    def __init__(self, app: ASGIApp, seconds: float = READ_SECONDS, max_depth: int = MAX_JSON_DEPTH):
        self.app, self.seconds, self.max_depth = app, seconds, max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in STATE_CHANGING:
            return await self.app(scope, receive, send)
        chunks, deadline = [], time.monotonic() + self.seconds
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                return await _reply(send, 408, f"the request body did not arrive within {self.seconds:g} s")
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        kind = dict(scope["headers"]).get(b"content-type", b"").split(b";")[0].strip().lower()
        # JSON is never nested deeper than its count of opening brackets (C speed; a base64 image has none),
        # so the exact count, a regex and two passes over the body, runs only when that could exceed the limit
        if (kind.endswith(b"json") and body.count(b"[") + body.count(b"{") > self.max_depth
                and json_depth(body) > self.max_depth):
            return await _reply(send, 400, f"the JSON body is nested more than {self.max_depth} levels deep")
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class OriginCheck:
    """403 for state-changing requests from another site's page: a foreign Origin, or Sec-Fetch-Site cross-site.

    Requests without these headers (curl, scripts, tests) pass: only browsers send them, and a browser
    always does on a cross-site POST, so a page elsewhere cannot make this server predict or train.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in STATE_CHANGING:
            headers = dict(scope["headers"])
            site = headers.get(b"sec-fetch-site", b"").decode("latin-1").lower()
            origin = headers.get(b"origin")
            if site == "cross-site":
                return await _reply(send, 403, "cross-site requests are refused; use this server's own page")
            if origin is not None and not _same_origin(origin.decode("latin-1"), scope["scheme"],
                                                       headers.get(b"host", b"").decode("latin-1")):
                return await _reply(send, 403, f"requests from Origin {origin.decode('latin-1')!r} are refused; "
                                               "use this server's own page")
        await self.app(scope, receive, send)


def _same_origin(origin: str, scheme: str, host: str) -> bool:
    """Whether Origin (scheme://host[:port]) names this server as the request's Host header does."""
    default = {"http": 80, "https": 443}
    try:
        theirs, ours = urlsplit(origin.lower()), urlsplit(f"{scheme}://{host.lower()}")
        return (theirs.scheme == ours.scheme and theirs.hostname is not None and theirs.hostname == ours.hostname
                and (theirs.port or default.get(theirs.scheme)) == (ours.port or default.get(ours.scheme)))
    except ValueError:  # a port out of range or a malformed address
        return False


class SecurityHeaders:
    """nosniff everywhere; a strict content-security policy on everything but the API docs."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        docs = scope["path"].startswith(("/docs", "/docs-assets"))

        async def with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                extra = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
                if not docs:
                    extra.append((b"content-security-policy", PAGE_POLICY.encode()))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)


class HostCheck:
    """Answer only requests whose Host header is one of `allowed` ("*": any), with a JSON 400 otherwise.

    A web page elsewhere can point its own domain name at 127.0.0.1 (DNS rebinding); checking the
    Host header keeps such a page from reaching the API.
    """

    def __init__(self, app: ASGIApp, allowed: list[str]):
        self.app, self.allowed = app, set(allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "*" not in self.allowed:
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1").lower()
            name = host.rsplit("]", 1)[0] + "]" if host.startswith("[") else host.split(":", 1)[0]
            if name not in self.allowed:
                return await _reply(send, 400, f"this server answers only to {', '.join(sorted(self.allowed))}, "
                                               f"not to Host {host!r}")
        await self.app(scope, receive, send)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(bind: str) -> list[str]:
    """Host names to answer: loopback names plus the bound address; any when bound to all interfaces."""
    if bind in ("0.0.0.0", "::", ""):
        return ["*"]
    return sorted({"127.0.0.1", "localhost", "[::1]", f"[{bind}]" if ":" in bind else bind.lower()})


def bind_warning(host: str) -> str | None:
    """What to tell the user when the server can be reached from other computers."""
    if is_loopback(host):
        return None
    return (f"listening on {host}, so other computers on the network can use this server (no login, "
            "and anyone can train); use --host 127.0.0.1 to keep it to this computer")
