"""Micro-batched predictions: concurrent requests share forward passes and get what the core gives each alone.

References: cnnlab.runs.predict on each image by itself (the core), and a recording fake model.
"""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed (pip install 'cnnlab[web]')")
import web_support  # noqa: E402
from web_api_support import error_of, upload  # noqa: E402

from cnnlab.models import load_model  # noqa: E402
from cnnlab.runs import predict as predictions  # noqa: E402
from cnnlab.web.batch import Batcher, Overloaded  # noqa: E402
from cnnlab.web.served import Served  # noqa: E402


class Recording:
    """A fake model: the probabilities row is the image's mean; records batch sizes; can be held."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.gate = threading.Event()
        self.gate.set()

    def forward(self, images: np.ndarray):
        self.gate.wait(10)
        self.sizes.append(len(images))
        return images.reshape(len(images), -1).mean(1, keepdims=True), [str(i) for i in range(len(images))]


class Full(Batcher):
    """A batcher whose queue is always full."""

    async def submit(self, model, image):
        raise Overloaded("the server is busy (0 predictions queued); retry in a second")


def test_concurrent_submissions_share_forward_passes_and_keep_their_rows():
    model, batcher = Recording(), Batcher(max_batch=8, window_s=0.01)

    async def main():
        return await asyncio.gather(*(batcher.submit(model, np.full((2, 2, 1), i, np.uint8)) for i in range(20)))

    rows = asyncio.run(main())
    assert [float(r[0][0]) for r in rows] == [float(i) for i in range(20)]
    assert sum(model.sizes) == 20 and max(model.sizes) == 8 and len(model.sizes) <= 4


def test_a_full_queue_is_refused_at_once():
    model, batcher = Recording(), Batcher(max_batch=2, window_s=0, max_queue=3)
    model.gate.clear()  # the model is busy: the queue fills

    async def main():
        tasks = [asyncio.create_task(batcher.submit(model, np.zeros((1, 1, 1), np.uint8))) for _ in range(12)]
        await asyncio.sleep(0.2)
        model.gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(main())
    refused = [r for r in results if isinstance(r, Overloaded)]
    assert 12 - 2 - 3 - 2 <= len(refused) <= 12 - 3  # at most a batch in the model and a queue's worth waiting
    assert all(isinstance(r, tuple) for r in results if not isinstance(r, Overloaded))


def test_batched_forward_matches_the_core_one_image_at_a_time(trained, mnist):
    served, model = Served(trained, trained.name), load_model(trained)
    xs = np.stack([served.prepare(web_support.png_bytes(mnist.x_test[i])) for i in range(16)])
    probs, ids = served.forward(xs)
    for x, row in zip(xs, probs):
        np.testing.assert_allclose(row, predictions.class_probabilities(model.module, x[None])[0], rtol=1e-5,
                                   atol=1e-6)
    assert len(set(ids)) == len(set(map(bytes, xs)))


def test_concurrent_http_predictions_agree_with_the_core(client, trained, mnist):
    model, served = load_model(trained), Served(trained, trained.name)
    raws = [web_support.png_bytes(mnist.x_test[i]) for i in range(24)]
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda raw: upload(client, raw).json(), raws))
    for i, body in enumerate(bodies):
        expected = predictions.class_probabilities(model.module, served.prepare(raws[i])[None])[0]
        np.testing.assert_allclose(body["probabilities"], expected, rtol=1e-5, atol=1e-6)
        assert body["top"] == predictions.top_k(np.asarray(body["probabilities"])[None], model.class_names, 5)[0]
        assert "input" not in body  # the PNG echo only when asked for


def test_raw_image_bodies_and_overload_status(client, mnist):
    raw = web_support.png_bytes(mnist.x_test[0])
    r = client.post("/api/predict", content=raw, headers={"content-type": "image/png"})
    assert r.status_code == 200 and r.json()["probabilities"] == upload(client, raw).json()["probabilities"]
    client.app.state.cnnlab.batcher = Full()
    r = upload(client, raw)
    assert r.status_code == 503 and r.headers["retry-after"] == "1" and "busy" in error_of(r)
