"""The web API's predictions and response maps, good and bad uploads, against the core on the same inputs.

References: load_model + to_model_input for predictions, explain.feature_maps for the maps.
"""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the web extra is not installed (pip install 'cnnlab[web]')")

import web_support  # noqa: E402
from web_api_support import drawing_png, error_of, upload  # noqa: E402

from cnnlab import explain  # noqa: E402
from cnnlab.datasets.image_files import (
    MAX_PIXELS,  # noqa: E402
    to_model_input,  # noqa: E402
)
from cnnlab.models import load_model  # noqa: E402
from cnnlab.spec.summary import summary_dict  # noqa: E402
from cnnlab.web.encode import GAP, VIRIDIS  # noqa: E402
from cnnlab.web.uploads import MAX_BODY_BYTES, MAX_IMAGE_BYTES  # noqa: E402


# --- predict --------------------------------------------------------------------------------------
def test_predict_matches_the_core_on_mnist_test_images(client, trained, mnist):
    model = load_model(trained)
    for i in range(12):
        raw = web_support.png_bytes(mnist.x_test[i])
        r = upload(client, raw, top_k=3, echo=1)
        assert r.status_code == 200, r.text
        body = r.json()
        x = to_model_input(Image.open(io.BytesIO(raw)), model.spec.input_shape, model.preprocessing)
        reference = model.predict(x[None])[0]
        np.testing.assert_allclose(body["probabilities"], reference, rtol=1e-5, atol=1e-6)
        assert [t["index"] for t in body["top"]] == list(np.argsort(-reference)[:3])
        assert body["classes"] == [str(d) for d in range(10)]
        assert body["input_shape"] == [28, 28, 1]
        received = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["input"].split(",", 1)[1]))))
        np.testing.assert_array_equal(received, x[:, :, 0])
    # the tiny model is right on most of these; the label check guards against a mixed-up class order
    hits = sum(upload(client, web_support.png_bytes(mnist.x_test[i])).json()["top"][0]["index"] == mnist.y_test[i]
               for i in range(12))
    assert hits >= 10


def test_predict_json_base64_and_data_url_agree_with_multipart(client, mnist):
    raw = web_support.png_bytes(mnist.x_test[3])
    multipart = upload(client, raw).json()
    b64 = base64.b64encode(raw).decode()
    for image in (b64, "data:image/png;base64," + b64):
        r = client.post("/api/predict", json={"image": image})
        assert r.status_code == 200, r.text
        assert r.json()["probabilities"] == multipart["probabilities"]
        assert r.json()["image_id"] == multipart["image_id"]


def test_predict_sniffs_type_from_content_not_name(client, mnist):
    raw = web_support.png_bytes(mnist.x_test[0])
    r = upload(client, raw, name="notes.txt", kind="text/plain")
    assert r.status_code == 200 and r.json()["top"][0]["class"] == "7"
    for fmt in ("JPEG", "GIF", "BMP", "WEBP"):
        buf = io.BytesIO()
        Image.fromarray(mnist.x_test[0][:, :, 0]).save(buf, format=fmt)
        r = upload(client, buf.getvalue(), name="x.png")
        assert r.status_code == 200, (fmt, r.text)
        assert r.json()["top"][0]["class"] == "7", fmt


def test_predict_top_k_and_a_photo_sized_drawing(client):
    r = upload(client, drawing_png(), top_k=10)
    body = r.json()
    probs = [t["probability"] for t in body["top"]]
    assert len(probs) == 10 and probs == sorted(probs, reverse=True)
    assert abs(sum(body["probabilities"]) - 1) < 1e-4
    for bad in (0, 1001, "x", "٣", "9" * 5000, -1, 2.5):
        r = upload(client, drawing_png(), top_k=bad)
        assert r.status_code == 422 and "top_k must be a whole number 1..1000" in r.json()["error"], (bad, r.text)
    assert len(upload(client, drawing_png(), top_k=1000).json()["top"]) == 10  # all of the classes
    assert upload(client, drawing_png(), echo="maybe").status_code == 422
    assert "input" in upload(client, drawing_png(), echo="yes").json()
    assert "input" not in upload(client, drawing_png(), echo="off").json()


def test_predict_is_documented_as_it_behaves(client):
    op = client.get("/openapi.json").json()["paths"]["/api/predict"]["post"]
    params = {p["name"]: p["schema"] for p in op["parameters"]}
    assert params["top_k"]["maximum"] == 1000 and params["echo"]["type"] == "boolean"
    assert {"200", "400", "403", "413", "415", "422", "503"} <= set(op["responses"])
    assert set(op["requestBody"]["content"]) == {"multipart/form-data", "application/json", "image/*"}


def _bomb_png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("1", (width, height)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


@pytest.mark.parametrize("case, status, words", [
    ("empty file", 400, "empty"),
    ("text as png", 415, "not an image"),
    ("truncated png", 400, "truncated"),
    ("bomb", 413, "pixels"),
    ("huge body", 413, "limit"),
    ("huge image", 413, "bytes; the limit"),
    ("no file field", 422, "'file'"),
    ("no body", 415, "content type"),
    ("plain text body", 415, "text/plain"),
    ("json without image", 422, "image"),
    ("json not base64", 400, "base64"),
    ("json malformed", 400, "JSON"),
    ("data url not base64", 422, "base64"),
])
def test_predict_refuses_bad_uploads_with_json_4xx(client, mnist, case, status, words):
    png = web_support.png_bytes(mnist.x_test[0])
    if case == "empty file":
        r = upload(client, b"")
    elif case == "text as png":
        r = upload(client, b"hello, I am not a picture", name="digit.png")
    elif case == "truncated png":
        r = upload(client, png[: len(png) // 2])
    elif case == "bomb":
        raw = _bomb_png(8000, 8000)  # 64 million pixels in a few kilobytes
        assert len(raw) < 100_000 and 8000 * 8000 > MAX_PIXELS
        r = upload(client, raw)
    elif case == "huge body":
        r = upload(client, png + b"\0" * MAX_BODY_BYTES)  # refused before the body is read
    elif case == "huge image":
        raw = png + b"\0" * MAX_IMAGE_BYTES  # within the body limit, over the image limit
        assert len(raw) < MAX_BODY_BYTES
        r = upload(client, raw)
    elif case == "no file field":
        r = client.post("/api/predict", files={"image": ("x.png", png, "image/png")})
    elif case == "no body":
        r = client.post("/api/predict")
    elif case == "plain text body":
        r = client.post("/api/predict", content=b"abc", headers={"content-type": "text/plain"})
    elif case == "json without image":
        r = client.post("/api/predict", json={"picture": "abc"})
    elif case == "json not base64":
        r = client.post("/api/predict", json={"image": "not base64!"})
    elif case == "json malformed":
        r = client.post("/api/predict", content=b"{oops", headers={"content-type": "application/json"})
    else:
        r = client.post("/api/predict", json={"image": "data:image/png,abc"})
    assert r.status_code == status, r.text
    assert words.lower() in error_of(r).lower()


def test_chunked_body_without_length_is_refused(client):
    r = client.post("/api/predict", content=iter([b"abc"]), headers={"content-type": "application/json"})
    assert r.status_code == 411
    assert "Content-Length" in error_of(r)


# --- maps -------------------------------------------------------------------------------------------
def test_maps_are_the_core_feature_maps_as_viridis_tiles(client, trained, mnist):
    raw = web_support.png_bytes(mnist.x_test[1])
    image_id = upload(client, raw).json()["image_id"]
    r = client.get("/api/explain/maps", params={"image": image_id})
    assert r.status_code == 200, r.text
    layers = r.json()["layers"]
    model = load_model(trained)
    x = to_model_input(Image.open(io.BytesIO(raw)), model.spec.input_shape, model.preprocessing)
    reference = explain.feature_maps(model.module, x)
    assert [layer["name"] for layer in layers] == [name for name, _ in reference] == \
        ["conv2d", "max_pooling2d", "conv2d_1", "max_pooling2d_1", "conv2d_2"]
    shapes = {row["name"]: row["output_shape"] for row in summary_dict(model.spec)["layers"]}
    for layer, (name, fmap) in zip(layers, reference):
        h, w, c = fmap.shape
        assert layer["output_shape"] == shapes[name] == [None, h, w, c]
        tiles = np.asarray(Image.open(io.BytesIO(base64.b64decode(layer["image"].split(",", 1)[1]))).convert("RGB"))
        assert tiles.shape == (layer["rows"] * (h + GAP) - GAP, layer["cols"] * (w + GAP) - GAP, 3)
        assert layer["rows"] * layer["cols"] >= c
        for ch in (0, c // 2, c - 1):
            m = fmap[:, :, ch]
            r_, q = divmod(ch, layer["cols"])
            tile = tiles[r_ * (h + GAP):r_ * (h + GAP) + h, q * (w + GAP):q * (w + GAP) + w]
            span = m.max() - m.min()
            level = np.round((m - m.min()) / span * 255).astype(int) if span > 0 else np.zeros_like(m, int)
            expected = VIRIDIS[level]
            assert np.abs(tile.astype(int) - expected.astype(int)).max() <= 1, (name, ch)


def test_maps_bad_requests(client):
    assert client.get("/api/explain/maps").status_code == 422
    r = client.get("/api/explain/maps", params={"image": "0123456789abcdef"})
    assert r.status_code == 404 and "POST it to /api/predict" in error_of(r)
    assert client.get("/api/explain/maps", params={"image": "x" * 100}).status_code == 422


