"""ASGI guards: request body size limit, Host header check, security headers; the bind-address warning."""
from __future__ import annotations

import ipaddress
import json
from typing import Any, Awaitable, Callable

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


class BodyLimit:
    """Refuse request bodies over `max_bytes` before reading them (411 without a Content-Length).

    The server (uvicorn's h11) never delivers more bytes than Content-Length says, so checking the
    header is enough; chunked uploads of unknown size are refused rather than counted.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
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
