"""The web API's spec checks (validated as you type) and training jobs: events, one job at a time, stop."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed (pip install 'cnnlab[web]')")
from fastapi.testclient import TestClient  # noqa: E402
from web_api_support import error_of  # noqa: E402

from cnnlab.spec import zoo  # noqa: E402
from cnnlab.spec.summary import summary_dict  # noqa: E402
from cnnlab.web.app import create_app  # noqa: E402


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
    ({"model": ""}, 422, "model"),  # none (left out) is the plan's model, as `cnnlab train` without --model
    ({"model": "seed", "epochs": 0}, 422, "epochs"),
    ({"model": "seed", "epochs": "two"}, 422, "epochs"),
    ({"model": "seed", "batch_size": -1}, 422, "batch_size"),
    ({"model": "seed", "batch_size": 4097}, 422, "batch_size"),
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


