"""The web app's JSON API through FastAPI's TestClient: the model and runs views, safety and plumbing.

References: the core's own functions on the same inputs (the run's metrics.json for the confusion cells,
summary_dict). Predictions and maps: test_web_predict.py; spec checks and training: test_web_train.py.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed (pip install 'cnnlab[web]')")
import web_support  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from web_api_support import drawing_png, error_of, upload  # noqa: E402

from cnnlab.models import load_model  # noqa: E402
from cnnlab.spec.summary import summary_dict  # noqa: E402
from cnnlab.web.app import create_app  # noqa: E402
from cnnlab.web.guards import allowed_hosts, bind_warning, is_loopback  # noqa: E402


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


# --- safety and plumbing ----------------------------------------------------------------------------
def test_page_and_docs_are_served_from_here(client):
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert '<script type="module" src="/static/app.js">' in page.text
    for src in ("/static/style.css", "/static/favicon.svg"):
        assert src in page.text
        assert client.get(src).status_code == 200, src
    # the modules app.js imports, followed import by import: each is served, as JavaScript
    seen, todo = set(), ["app.js"]
    while todo:
        name = todo.pop()
        seen.add(name)
        script = client.get(f"/static/{name}")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"], name
        todo += [n for n in re.findall(r'^import .* from "\./([\w-]+\.js)";$', script.text, re.M) if n not in seen]
    assert seen == {"app.js", "common.js", "try.js", "model.js", "train.js", "charts.js", "data.js"}
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


def test_cnnlab_serve_command_starts_a_local_server(trained, tmp_path):
    port = web_support.free_port()
    proc = web_support.start_cnnlab_serve([str(trained), "--runs", str(tmp_path / "runs")], port)
    try:
        assert web_support.wait_for_json(f"http://127.0.0.1:{port}/api/model", proc, 60)["name"] == trained.name
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/" in out
    assert "warning" not in err
    bad = subprocess.run([sys.executable, "-m", "cnnlab", "serve", str(tmp_path / "missing")], env=web_support.cnnlab_env(),
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "no model at" in bad.stderr and "Traceback" not in bad.stderr


def test_the_model_file_inside_a_run_folder_is_served_with_its_run(trained):
    from cnnlab.runs.model_file import MODEL_FILE
    client = TestClient(create_app(run=trained / MODEL_FILE, runs_dir=trained.parent, host="0.0.0.0"))
    body = client.get("/api/model").json()
    assert body["config"] is not None and body["metrics"] is not None and body["history"] is not None
