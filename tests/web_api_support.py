"""Fixtures and helpers shared by the web API tests (test_web_api, test_web_predict, test_web_train).

conftest.py registers this module as a pytest plugin when the web extra (fastapi) is installed, so its
fixtures reach every test module; the helpers are imported by name.
"""
from __future__ import annotations

import io
from pathlib import Path

import pytest
import web_support
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from cnnlab.web.app import create_app

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return web_support.tiny_run(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def runs_dir(tmp_path: Path, trained: Path) -> Path:
    return web_support.runs_dir_with_tiny_run(tmp_path, trained)


@pytest.fixture
def client(runs_dir: Path):
    with TestClient(create_app(runs_dir=runs_dir), base_url="http://127.0.0.1") as c:
        yield c


def upload(client: TestClient, raw: bytes, name: str = "digit.png", kind: str = "image/png", **params):
    return client.post("/api/predict", files={"file": (name, raw, kind)}, params=params)


def error_of(response) -> str:
    body = response.json()
    assert set(body) >= {"error"}, body
    assert "Traceback" not in body["error"]
    return body["error"]


def drawing_png(size: int = 280) -> bytes:
    """A '1' as the page's canvas sends it: black ink on white, 280 x 280."""
    img = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(img).line([(size // 2, size // 6), (size // 2 + 8, size * 5 // 6)], fill="black", width=18)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


