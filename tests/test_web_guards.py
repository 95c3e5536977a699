"""The web app's ASGI guards: other sites' pages are refused, deep JSON and trickled bodies are cut off.

References: the app's own route table (so a new POST endpoint is covered without editing this file),
Python's json module for nesting depth, and a hand-written ASGI receive that stalls.
"""
from __future__ import annotations

import asyncio
import json

import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed (pip install 'cnnlab[web]')")
from web_api_support import error_of  # noqa: E402

from cnnlab.web.guards import BodyRead, json_depth  # noqa: E402

FOREIGN = [{"origin": "http://evil.example"}, {"origin": "null"}, {"origin": "http://127.0.0.1:9999"},
           {"origin": "https://127.0.0.1"}, {"sec-fetch-site": "cross-site"},
           {"origin": "http://127.0.0.1", "sec-fetch-site": "cross-site"}]


def post_routes(client) -> list[str]:
    paths = sorted({r.path for r in client.app.routes if "POST" in getattr(r, "methods", ())})
    assert {"/api/predict", "/api/spec", "/api/train", "/api/train/stop", "/api/model"} <= set(paths)
    return paths


@pytest.mark.parametrize("headers", FOREIGN)
def test_every_post_from_a_foreign_page_is_refused(client, headers):
    for path in post_routes(client):
        r = client.post(path, json={"model": "seed", "run": "x", "image": ""}, headers=headers)
        assert r.status_code == 403, (path, r.status_code, r.text)
        assert "refused" in error_of(r)
    assert client.get("/api/train").json()["state"] == "idle"  # nothing was started


@pytest.mark.parametrize("headers", [{}, {"origin": "http://127.0.0.1"}, {"origin": "http://127.0.0.1:80"},
                                     {"sec-fetch-site": "same-origin"}, {"sec-fetch-site": "none"}])
def test_own_page_and_scripts_without_origin_still_work(client, headers):
    r = client.post("/api/spec", json={"model": "seed"}, headers=headers)
    assert r.status_code == 200, r.text
    assert client.get("/api/model", headers={"origin": "http://evil.example"}).status_code == 200  # reads pass


@pytest.mark.parametrize("body", ["[" * 9000, "{\"a\":" * 9000, "[" * 9000 + "]" * 9000,
                                  json.dumps({"model": "seed", "x": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]})])
def test_deeply_nested_json_is_a_4xx_on_every_post(client, body):
    for path in post_routes(client):
        r = client.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, (path, r.status_code, r.text)
        assert "nested" in error_of(r)


@pytest.mark.parametrize("text", ['[{"a": "[[[[["}, 1]', '"\\"[[[["', '{"a": [[], {"b": {}}]}', "[]", "",
                                  '["\\\\", [1]]'])
def test_json_depth_agrees_with_the_parsed_structure(text):
    def depth(value) -> int:
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        return 1 + max((depth(v) for v in children), default=0) if isinstance(value, (dict, list)) else 0
    assert json_depth(text.encode()) == (depth(json.loads(text)) if text else 0)


def test_a_body_that_trickles_in_is_cut_off():
    sent, reached = [], []

    async def app(scope, receive, send):
        reached.append(await receive())

    async def trickle():
        await asyncio.sleep(0.05)
        if len(sent) < 20:
            sent.append(1)
            return {"type": "http.request", "body": b"x", "more_body": True}
        return {"type": "http.request", "body": b"", "more_body": False}

    replies = []

    async def send(message):
        replies.append(message)

    scope = {"type": "http", "method": "POST", "headers": [(b"content-type", b"image/png")]}
    asyncio.run(BodyRead(app, seconds=0.3)(scope, trickle, send))
    assert not reached and replies[0]["status"] == 408 and 3 <= len(sent) <= 8
    sent.clear()
    asyncio.run(BodyRead(app, seconds=30)(scope, trickle, send))  # the same body, given time, reaches the app
    assert reached == [{"type": "http.request", "body": b"x" * 20, "more_body": False}]
