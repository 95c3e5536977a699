"""The web app's JSON API through FastAPI's TestClient: every endpoint, good and bad requests.

References: the core's own functions on the same inputs (load_model + to_model_input for predictions,
explain.feature_maps for the maps, the run's metrics.json for the confusion cells, summary_dict).
"""
from __future__ import annotations

import base64
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

pytest.importorskip("fastapi", reason="the web extra is not installed (pip install 'cnnlab[web]')")
from fastapi.testclient import TestClient  # noqa: E402

import web_support  # noqa: E402
from cnnlab import explain, zoo  # noqa: E402
from cnnlab.models import load_model  # noqa: E402
from cnnlab.predict import to_model_input  # noqa: E402
from cnnlab.summary import summary_dict  # noqa: E402
from cnnlab.web.app import create_app  # noqa: E402
from cnnlab.web.encode import GAP, VIRIDIS  # noqa: E402
from cnnlab.web.guards import allowed_hosts, bind_warning, is_loopback  # noqa: E402
from cnnlab.web.uploads import MAX_BODY_BYTES, MAX_IMAGE_BYTES, MAX_PIXELS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return web_support.tiny_run(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def mnist():
    return web_support.mnist()


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


# --- predict --------------------------------------------------------------------------------------
def test_predict_matches_the_core_on_mnist_test_images(client, trained, mnist):
    model = load_model(trained)
    for i in range(12):
        raw = web_support.png_bytes(mnist.x_test[i])
        r = upload(client, raw, top_k=3)
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
    assert upload(client, drawing_png(), top_k=0).status_code == 422
    assert upload(client, drawing_png(), top_k="x").status_code == 422


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


# --- the model and runs ------------------------------------------------------------------------------
def test_model_describes_the_run(client, trained):
    body = client.get("/api/model").json()
    metrics = json.loads((trained / "metrics.json").read_text())
    assert body["name"] == trained.name
    assert body["summary"] == json.loads(json.dumps(summary_dict(load_model(trained).spec)))
    assert body["summary"]["total_params"] == 93_322  # the seed CNN as Keras counts it
    assert body["metrics"]["test_accuracy"] == metrics["test_accuracy"]
    assert body["metrics"]["confusion_matrix"] == metrics["confusion_matrix"]
    assert body["history"]["loss"] and body["config"]["model"] == "seed"
    assert body["compact"].startswith("in28x28x1 conv32k3:relu max2")


def test_examples_match_the_confusion_matrix(client, trained):
    cm = np.array(json.loads((trained / "metrics.json").read_text())["confusion_matrix"])
    for t in range(10):
        for p in range(10):
            r = client.get("/api/model/examples", params={"true": t, "predicted": p, "limit": 2})
            assert r.status_code == 200
            assert r.json()["count"] == cm[t, p], (t, p)
            assert len(r.json()["images"]) == min(2, cm[t, p])
    t, p = np.unravel_index(np.argmax(cm - np.diag(np.diag(cm))), cm.shape)
    images = client.get("/api/model/examples", params={"true": int(t), "predicted": int(p)}).json()["images"]
    data = web_support.mnist()
    assert all(data.y_test[im["index"]] == t for im in images)
    for bad in ({"true": 10, "predicted": 0}, {"true": -1, "predicted": 0}, {"true": "a", "predicted": 0}, {"true": 1}):
        r = client.get("/api/model/examples", params=bad)
        assert r.status_code == 422, (bad, r.text)
        error_of(r)


def test_runs_list_flags_broken_folders_and_skips_hidden_ones(client, runs_dir, trained):
    (runs_dir / "broken").mkdir()
    (runs_dir / ".half-written").mkdir()
    body = client.get("/api/runs").json()
    names = [r["name"] for r in body["runs"]]
    assert set(names) == {trained.name, "broken"}
    assert body["served"] == trained.name
    good = next(r for r in body["runs"] if r["name"] == trained.name)
    metrics = json.loads((trained / "metrics.json").read_text())
    assert good["test_accuracy"] == metrics["test_accuracy"] and good["epochs"] == 1 and good["params"] == 93_322
    assert "error" in next(r for r in body["runs"] if r["name"] == "broken")


@pytest.mark.parametrize("name", ["../runs", "..", "/etc", "../../etc/passwd", "a/b", "nope", "broken", "",
                                  "%2e%2e", "..\\..\\x", "outside-link"])
def test_serving_a_run_never_leaves_the_runs_folder(client, runs_dir, trained, tmp_path, name):
    (runs_dir / "broken").mkdir()
    elsewhere = tmp_path / "elsewhere"
    (runs_dir / "outside-link").symlink_to(web_support.runs_dir_with_tiny_run(elsewhere, trained) / trained.name)
    r = client.post("/api/model", json={"run": name})
    assert r.status_code == 404, r.text
    error_of(r)
    assert client.get("/api/model").json()["name"] == trained.name


def test_switching_the_served_run(client, runs_dir, trained):
    other = runs_dir / "copy-of-tiny"
    import shutil
    shutil.copytree(trained, other)
    r = client.post("/api/model", json={"run": "copy-of-tiny"})
    assert r.status_code == 200 and r.json()["name"] == "copy-of-tiny"
    assert client.get("/api/runs").json()["served"] == "copy-of-tiny"
    assert client.post("/api/model", json={}).status_code == 422
    assert client.post("/api/model", json={"run": 3}).status_code == 422


def test_without_a_model_the_api_says_so(tmp_path):
    with TestClient(create_app(runs_dir=tmp_path / "empty"), base_url="http://127.0.0.1") as c:
        for r in (c.get("/api/model"), upload(c, drawing_png()), c.get("/api/model/examples?true=0&predicted=0")):
            assert r.status_code == 404
            assert "no model is being served" in error_of(r)
        assert c.get("/api/runs").json() == {"runs": [], "served": None}


def test_serving_a_bare_model_file(tmp_path, trained, mnist):
    import shutil
    model_file = tmp_path / "digits.safetensors"
    shutil.copy(trained / "model.safetensors", model_file)
    with TestClient(create_app(run=model_file, runs_dir=tmp_path / "runs"), base_url="http://127.0.0.1") as c:
        body = c.get("/api/model").json()
        assert body["name"] == "digits.safetensors" and body["metrics"] is None and body["history"] is None
        assert body["summary"]["total_params"] == 93_322
        assert upload(c, web_support.png_bytes(mnist.x_test[0])).json()["top"][0]["class"] == "7"
        r = c.get("/api/model/examples", params={"true": 0, "predicted": 0})
        assert r.status_code == 404 and "bare model file" in error_of(r)


def test_image_folders_given_at_start_are_offered_by_name(tmp_path, runs_dir):
    folder = tmp_path / "hotdogs"
    for label in ("hotdog", "not_hotdog"):
        (folder / label).mkdir(parents=True)
    with TestClient(create_app(runs_dir=runs_dir, data_dirs=[folder]), base_url="http://127.0.0.1") as c:
        datasets = c.get("/api/train/options").json()["datasets"]
        offered = next(d for d in datasets if d["name"] == "hotdogs")
        assert offered["kind"] == "folder"
        assert str(folder) not in [d["name"] for d in datasets]  # named, never addressed by path
        r = c.post("/api/spec", json={"model": "seed", "data": str(folder)})
        assert r.status_code == 404 and "unknown dataset" in error_of(r)
    with pytest.raises(FileNotFoundError, match="not found"):
        create_app(runs_dir=runs_dir, data_dirs=[tmp_path / "missing"])


def test_serving_a_run_outside_the_runs_folder(tmp_path, trained):
    with TestClient(create_app(run=trained, runs_dir=tmp_path / "empty"), base_url="http://127.0.0.1") as c:
        assert c.get("/api/model").json()["name"] == trained.name
        assert [r["name"] for r in c.get("/api/runs").json()["runs"]] == [trained.name]
        assert c.post("/api/model", json={"run": trained.name}).status_code == 200


# --- spec checks and training ------------------------------------------------------------------------
def test_options_list_datasets_zoo_and_optimizers(client):
    body = client.get("/api/train/options").json()
    assert "mnist" in [d["name"] for d in body["datasets"]]
    assert [z["name"] for z in body["zoo"]] == list(zoo.ZOO)
    assert body["optimizers"] == ["adam", "adamw", "sgd", "rmsprop"]


@pytest.mark.parametrize("text", ["seed", "lenet5", "conv8k3:relu max2 flatten dense10:softmax",
                                  '[{"type": "Flatten"}, {"type": "Dense", "units": 10, "activation": "softmax"}]',
                                  '{"input_shape": [28, 28, 1], "layers": [{"type": "Flatten"}, '
                                  '{"type": "Dense", "units": 10}]}'])
def test_spec_preview_is_the_core_summary(client, text):
    r = client.post("/api/spec", json={"model": text, "data": "mnist"})
    assert r.status_code == 200, r.text
    spec, _ = zoo.resolve_text(text, (28, 28, 1), 10)
    assert r.json()["summary"] == json.loads(json.dumps(summary_dict(spec)))


@pytest.mark.parametrize("body, status, words", [
    ({"model": "conv8k3:relu flatten dense5"}, 422, "10 classes"),
    ({"model": "conv8k3 blorp dense10"}, 422, "'blorp'"),
    ({"model": "{not json"}, 422, "not valid JSON"),
    ({"model": '[{"type": "Conv3D"}]'}, 422, "unknown layer type"),
    ({"model": "in32x32x3 flatten dense10"}, 422, "does not match"),
    ({"model": "conv8k30 flatten dense10"}, 422, "cannot take input shape"),
    ({"model": "/etc/passwd"}, 422, "cannot read token"),
    ({"model": "../../runs/x/config.json"}, 422, "cannot read token"),
    ({"model": "   "}, 422, "empty model"),
    ({"model": "conv60000k3 flatten dense10"}, 422, "limit"),
    ({"model": "seed", "data": "nope"}, 404, "unknown dataset"),
    ({"model": "seed", "data": "../../etc"}, 404, "unknown dataset"),
    ({"data": "mnist"}, 422, "model"),
    ({"model": 5}, 422, "model"),
])
def test_spec_errors_are_inline_messages(client, body, status, words):
    r = client.post("/api/spec", json=body)
    assert r.status_code == status, r.text
    assert words.lower() in error_of(r).lower()


@pytest.mark.parametrize("body, status, words", [
    ({}, 422, "model"),
    ({"model": "seed", "epochs": 0}, 422, "epochs"),
    ({"model": "seed", "epochs": "two"}, 422, "epochs"),
    ({"model": "seed", "batch_size": -1}, 422, "batch_size"),
    ({"model": "seed", "optimizer": "magic"}, 422, "optimizer"),
    ({"model": "seed", "lr": -0.1}, 422, "lr"),
    ({"model": "seed", "limit_train": 0}, 422, "limit_train"),
    ({"model": "dense5", "data": "mnist"}, 422, "classes"),
    ({"model": "seed", "data": "/usr/share"}, 404, "unknown dataset"),
])
def test_train_refuses_bad_requests_and_starts_nothing(client, body, status, words):
    r = client.post("/api/train", json=body)
    assert r.status_code == status, r.text
    assert words.lower() in error_of(r).lower()
    assert client.get("/api/train").json() == {"state": "idle"}


def test_train_needs_a_json_body(client):
    for r in (client.post("/api/train"), client.post("/api/train", content=b"epochs=1",
                                                     headers={"content-type": "application/x-www-form-urlencoded"})):
        assert r.status_code == 422
        error_of(r)


def read_events(client: TestClient) -> list[dict]:
    events = []
    with client.stream("GET", "/api/train/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return events


def test_train_a_small_subset_streams_events_and_adds_a_run(client, runs_dir):
    assert read_events(client) == [{"event": "idle", "id": 0}]
    r = client.post("/api/train", json={"model": "seed", "data": "mnist", "epochs": 1, "batch_size": 50,
                                        "limit_train": 600, "limit_test": 200})
    assert r.status_code == 202, r.text
    run = r.json()["run"]
    events = read_events(client)  # ends after the job's last event
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and "epoch" in kinds
    assert kinds.count("step") >= 5  # a curve, not a dot: about 25 points per epoch
    assert [e["id"] for e in events] == list(range(len(events)))
    assert events[0]["train_images"] == 600 and events[0]["test_images"] == 200
    steps = [e for e in events if e["event"] == "step"]
    assert steps[-1]["step"] == steps[-1]["steps"] == 12
    done = events[-1]
    assert done["run"] == run and done["stopped"] is False and 0 <= done["test_accuracy"] <= 1
    metrics = json.loads((runs_dir / run / "metrics.json").read_text())
    assert metrics["n_test"] == 200 and metrics["test_accuracy"] == done["test_accuracy"]
    assert run in [x["name"] for x in client.get("/api/runs").json()["runs"]]
    assert client.get("/api/train").json()["state"] == "done"
    # a reconnecting EventSource sends Last-Event-ID and gets only what it missed
    with client.stream("GET", "/api/train/events", headers={"Last-Event-ID": str(len(events) - 2)}) as r:
        again = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert [e["id"] for e in again] == [len(events) - 1]
    served = client.post("/api/model", json={"run": run})
    assert served.status_code == 200 and served.json()["metrics"]["n_test"] == 200


def test_one_job_at_a_time_and_stop(client, runs_dir):
    assert client.post("/api/train/stop").status_code == 409
    big = {"model": "seed", "data": "mnist", "epochs": 3, "batch_size": 32, "limit_train": 20000, "limit_test": 100}
    first = client.post("/api/train", json=big)
    assert first.status_code == 202, first.text
    second = client.post("/api/train", json={**big, "epochs": 1})
    assert second.status_code == 409
    assert "busy" in error_of(second)
    stop = client.post("/api/train/stop")
    assert stop.status_code == 200 and stop.json()["run"] == first.json()["run"]
    events = read_events(client)
    done = events[-1]
    assert done["event"] == "done" and done["stopped"] is True and done["epochs"] == 1
    assert (runs_dir / done["run"] / "model.safetensors").is_file()  # a stopped run is still saved
    assert client.post("/api/train", json={**big, "epochs": 1, "limit_train": 300}).status_code == 202
    assert read_events(client)[-1]["event"] == "done"


def test_a_failing_job_reports_its_error(tmp_path):
    blocked = tmp_path / "runs"
    blocked.write_text("a file where the runs folder should be")  # training works, saving the run cannot
    with TestClient(create_app(runs_dir=blocked), base_url="http://127.0.0.1") as c:
        r = c.post("/api/train", json={"model": "seed", "data": "mnist", "epochs": 1,
                                       "limit_train": 200, "limit_test": 50})
        assert r.status_code == 202
        last = read_events(c)[-1]
        assert last["event"] == "error" and str(blocked) in last["error"]
        assert c.get("/api/train").json()["state"] == "error"
        assert c.post("/api/train/stop").status_code == 409


# --- safety and plumbing ----------------------------------------------------------------------------
def test_page_and_docs_are_served_from_here(client):
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    for src in ("/static/app.js", "/static/try.js", "/static/model.js", "/static/train.js", "/static/charts.js",
                "/static/style.css", "/static/favicon.svg"):
        assert src in page.text
        assert client.get(src).status_code == 200, src
    assert "http" not in page.text.replace("http-equiv", "")
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "/docs-assets/swagger-ui-bundle.js" in docs.text and "cdn" not in docs.text.lower()
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/predict", "/api/model", "/api/runs", "/api/train", "/api/train/events", "/api/train/stop",
                 "/api/explain/maps", "/api/spec", "/api/train/options", "/api/model/examples"):
        assert path in paths, path


@pytest.mark.parametrize("path", ["/static/../app.py", "/static/..%2fapp.py", "/static/%2e%2e/%2e%2e/cli.py",
                                  "/static//etc/passwd", "/docs-assets/../../fastapi/__init__.py"])
def test_static_files_never_leave_their_folder(client, path):
    r = client.get(path)
    assert r.status_code == 404, (path, r.status_code)
    assert "def " not in r.text and "root:" not in r.text


def test_foreign_host_header_is_refused(client):
    # a page elsewhere whose DNS name points at 127.0.0.1 (DNS rebinding) reaches no API
    for host in ("attacker.example", "attacker.example:8000", "127.0.0.1.attacker.example", ""):
        r = client.get("/api/model", headers={"host": host})
        assert r.status_code == 400, host
        assert "answers only to" in error_of(r)
    for host in ("localhost:8000", "127.0.0.1", "[::1]:8000", "LOCALHOST"):
        assert client.get("/api/model", headers={"host": host}).status_code == 200, host


def test_hosts_loopback_and_the_bind_warning():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.com")
    assert allowed_hosts("0.0.0.0") == allowed_hosts("::") == ["*"]
    assert set(allowed_hosts("192.168.1.5")) == {"192.168.1.5", "127.0.0.1", "localhost", "[::1]"}
    assert bind_warning("127.0.0.1") is None and bind_warning("localhost") is None and bind_warning("::1") is None
    for host in ("0.0.0.0", "192.168.1.5", "::"):
        assert "other computers" in bind_warning(host) and host in bind_warning(host)


def test_unknown_routes_and_methods_are_json_4xx(client):
    for r in (client.get("/api/nothing"), client.delete("/api/model"), client.put("/api/train", json={})):
        assert 400 <= r.status_code < 500
        error_of(r)


def test_prediction_latency(client, trained):
    """Well under 200 ms per prediction on CPU for the seed CNN (here a 1-thread, shared CPU)."""
    raw = drawing_png()
    upload(client, raw)  # warm-up
    predict_ms, maps_ms = [], []
    for _ in range(15):
        started = time.perf_counter()
        image_id = upload(client, raw).json()["image_id"]
        predict_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        client.get("/api/explain/maps", params={"image": image_id})
        maps_ms.append((time.perf_counter() - started) * 1000)
    print(f"\nPOST /api/predict median {statistics.median(predict_ms):.1f} ms, "
          f"GET /api/explain/maps median {statistics.median(maps_ms):.1f} ms (280x280 canvas PNG, seed CNN)")
    assert statistics.median(predict_ms) < 100
    assert statistics.median(maps_ms) < 100


def test_cnnlab_serve_command_starts_a_local_server(trained, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", str(trained), "--port", str(port),
                             "--runs", str(tmp_path / "runs")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/model", timeout=2) as r:
                    assert json.loads(r.read())["name"] == trained.name
                break
            except OSError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "cnnlab serve did not answer within 60 s"
                time.sleep(0.3)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/" in out
    assert "warning" not in err
    bad = subprocess.run([sys.executable, "-m", "cnnlab", "serve", str(tmp_path / "missing")], env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "not found" in bad.stderr and "Traceback" not in bad.stderr
