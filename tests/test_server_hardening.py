"""The server under hostile or unlucky use (issue 21): nested model text, event streams of finished jobs,
the test evaluation computed once, and decodes admitted against a memory budget."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed (pip install 'cnnlab[web]')")
from fastapi.testclient import TestClient  # noqa: E402
from web_api_support import error_of  # noqa: E402

from cnnlab.web.app import _stream, create_app  # noqa: E402
from cnnlab.web.jobs import Job, Trainer  # noqa: E402


@pytest.mark.parametrize("model", ["[" * 9000, "[" * 9000 + "]" * 9000, '{"layers": ' * 1500 + "[]" + "}" * 1500,
                                   '[{"type": "Dense", "units": 10, "name": "' + "[" * 9000 + '"}]'])
def test_spec_with_deeply_nested_model_text_is_a_one_line_4xx(tmp_path: Path, model: str):
    with TestClient(create_app(runs_dir=tmp_path), base_url="http://127.0.0.1") as client:
        r = client.post("/api/spec", json={"model": model})
    assert 400 <= r.status_code < 500, r.text
    message = error_of(r)
    assert "\n" not in message
    if model.startswith('[{"type"'):  # brackets inside a string are no nesting: the spec itself is checked
        assert "nested" not in message
    else:
        assert "nested more than" in message


def finished_trainer(final: str = "done") -> Trainer:
    trainer = Trainer()
    job = Job(1, Path("runs/x"))
    job.emit("start", run="x")
    job.emit("epoch", epoch=1)
    job.emit(final)
    trainer.job = job
    return trainer


async def collect(stream) -> list[str]:
    return [chunk async for chunk in stream]


@pytest.mark.parametrize("final", ["done", "error"])
@pytest.mark.parametrize("start", [3, 4, 10])  # Last-Event-ID 2 (the last event), 3 and 9: past it
def test_events_of_a_finished_job_end_when_the_client_has_them_all(start: int, final: str):
    chunks = asyncio.run(asyncio.wait_for(collect(_stream(finished_trainer(final), start)), 2.0))
    assert chunks == []


def test_events_of_a_finished_job_resume_after_last_event_id():
    chunks = asyncio.run(asyncio.wait_for(collect(_stream(finished_trainer(), 1)), 2.0))
    assert [c.split("\n")[0] for c in chunks] == ["id: 1", "id: 2"]


def test_examples_evaluate_the_test_set_once_and_predictions_go_on_meanwhile(trained: Path):
    from concurrent.futures import ThreadPoolExecutor

    from cnnlab.web.served import Served
    from cnnlab.web.stores import DataStore

    served = Served(trained, trained.name)
    seen: list[int] = []

    def slow_evaluation(module, inputs, output):  # 1 ms an image: the whole test set takes seconds
        if inputs[0].shape[0] > 1:
            seen.append(inputs[0].shape[0])
            time.sleep(0.001 * inputs[0].shape[0])

    served.model.module.register_forward_hook(slow_evaluation)
    data = DataStore()
    digit = data.for_run(trained, served.model.preprocessing).x_test[0]
    with ThreadPoolExecutor(8) as pool:
        first = [pool.submit(served.examples, data, 0, 0, 3) for _ in range(8)]  # 8 concurrent first requests
        time.sleep(0.5)  # the evaluation is under way
        started = time.perf_counter()
        served.forward(digit[None])
        predict_s = time.perf_counter() - started
        answers = [f.result(timeout=120) for f in first]
    assert sum(seen) == served.metrics["n_test"], f"the test images were evaluated {sum(seen)} times in all"
    assert all(a == answers[0] for a in answers) and answers[0]["count"] > 0
    assert predict_s < 1.0, f"a prediction waited {predict_s:.2f} s for the examples' evaluation"
