"""Micro-batching for POST /api/predict: concurrent requests share one forward pass, a bounded queue sheds load.

A request's image is decoded and preprocessed by the request itself; only the forward pass is shared.
The worker takes the first queued input; when others are queued too (the server is under load) it
waits `window_s` for more unless a full batch is there already (a lone request waits for nothing), runs up to `max_batch` inputs through the model in one call on its own thread, and resolves each
request's future with its row of probabilities.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

MAX_BATCH = 64
WINDOW_S = 0.003  # how long a lone request waits for others; far below a network round trip
MAX_QUEUE = 512  # inputs waiting for the model; more are answered 503 at once instead of waiting for seconds


class Overloaded(RuntimeError):
    """The queue is full: the client should retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class Model(Protocol):
    def forward(self, images: np.ndarray) -> tuple[np.ndarray, list[str]]: ...


class Batcher:
    """Queues (model, input) pairs and answers each with (probabilities row, image id)."""

    def __init__(self, max_batch: int = MAX_BATCH, window_s: float = WINDOW_S, max_queue: int = MAX_QUEUE):
        if max_batch < 1 or max_queue < 1 or window_s < 0:
            raise ValueError(f"max_batch and max_queue must be >= 1 and window_s >= 0, got "
                             f"{max_batch}, {max_queue}, {window_s}")
        self.max_batch, self.window_s, self.max_queue = max_batch, window_s, max_queue
        self._queue: asyncio.Queue[tuple[Model, np.ndarray, asyncio.Future[Any]]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="cnnlab-forward")  # one forward pass at a time

    async def submit(self, model: Model, image: np.ndarray) -> tuple[np.ndarray, str]:
        """One preprocessed image (H, W, C) -> its probabilities and image id; Overloaded when the queue is full."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._queue = asyncio.Queue(self.max_queue)  # a queue belongs to one event loop
            self._task = loop.create_task(self._work(self._queue), name="cnnlab-batcher")
        assert self._queue is not None
        future: asyncio.Future[Any] = loop.create_future()
        try:
            self._queue.put_nowait((model, image, future))
        except asyncio.QueueFull:
            raise Overloaded(f"the server is busy ({self.max_queue} predictions queued); retry in a second") from None
        return await future

    async def _work(self, queue: asyncio.Queue[tuple[Model, np.ndarray, asyncio.Future[Any]]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            if 0 < queue.qsize() < self.max_batch - 1:
                await asyncio.sleep(self.window_s)
            while len(batch) < self.max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            for model in {id(item[0]): item[0] for item in batch}.values():  # a model switch mid-batch
                items = [item for item in batch if item[0] is model]
                try:
                    probs, ids = await loop.run_in_executor(self._pool, model.forward,
                                                            np.stack([item[1] for item in items]))
                except Exception as exc:  # noqa: BLE001 - each waiting request gets the error
                    for _, _, future in items:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, _, future), row, image_id in zip(items, probs, ids):
                    if not future.done():  # the client may have gone
                        future.set_result((row, image_id))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._pool.shutdown(wait=False)
