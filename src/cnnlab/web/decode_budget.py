"""Decodes of uploads admitted against a memory budget: queued in arrival order, refused with 503 when they wait too long.

A 157 KB PNG of flat colour can hold 49 million pixels; decoding it and turning it into a model input costs
~1 GB (`uploads.decode_cost` estimates it from the header), so twenty at once would exhaust the machine. Each
decode first takes its estimated bytes from the budget, waiting at most `wait_s` in a first-come queue (a large
image is not overtaken for ever by small ones), and runs on a small thread pool, off the event loop, so the
server keeps answering. An estimate over the whole budget is refused at once (413: waiting cannot help); a
decode that cannot be admitted in time gets 503 with Retry-After. The bytes return to the budget when the
decode ends, even if its client has gone. `stop` (on SIGTERM) answers every waiting, running and later decode
with 503 at once, so the server exits without waiting for them (decode threads are daemons: they hold no file).
"""
from __future__ import annotations

import asyncio
import math
import os
import queue
import threading
from collections import deque
from concurrent.futures import Future
from typing import Any, Callable, TypeVar

from cnnlab.spec.memory import memory_limit
from cnnlab.web.batch import Overloaded
from cnnlab.web.uploads import UploadError

T = TypeVar("T")
MAX_BUDGET_BYTES = 1536 * 2**20  # one 49-megapixel digit photo (~1.1 GB) at a time, two photos for a colour model
WAIT_S = 2.0  # a browser's upload should not hang for longer; then 503 and the client retries
INLINE_BYTES = 2**20  # decodes this small (a drawn digit, a 224x224 photo) run on the loop: a thread costs more
WORKERS = min(4, os.cpu_count() or 1)


def default_budget() -> int:
    """MAX_BUDGET_BYTES, or half the memory cnnlab may use (`cnnlab.spec.memory.memory_limit`) if less."""
    return min(MAX_BUDGET_BYTES, memory_limit() // 2)


class DecodeBudget:
    """Bytes for decodes in flight: `run(cost, fn, *args)` runs `fn` once `cost` bytes are free."""

    def __init__(self, total_bytes: int | None = None, wait_s: float = WAIT_S, workers: int = WORKERS):
        self.total = default_budget() if total_bytes is None else int(total_bytes)
        if self.total < 1 or wait_s <= 0 or workers < 1:
            raise ValueError(f"total_bytes, wait_s and workers must be positive, got {self.total}, {wait_s}, {workers}")
        self.wait_s = wait_s
        self.used = 0
        self.peak = 0  # the most bytes admitted at once, for tests and benchmarks
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._pool = _DaemonPool(workers)
        self._running: set[asyncio.Future[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False

    async def run(self, cost: int, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` with `cost` bytes of the budget held: on the loop when small, else on a decode thread."""
        self._loop = asyncio.get_running_loop()
        if cost <= INLINE_BYTES and not self._stopped and self._fits(cost):
            self._take(cost)
            try:
                return fn(*args)
            finally:
                self._release(cost)
        await self._admit(cost)
        loop = self._loop
        answer: asyncio.Future[T] = loop.create_future()

        def finished(work: Future[T]) -> None:  # on the loop; the bytes return even if the client has gone
            self._release(cost)
            if answer.done():
                return
            if work.cancelled():
                answer.set_exception(_shutting_down())
            elif work.exception() is not None:
                answer.set_exception(work.exception())  # type: ignore[arg-type]
            else:
                answer.set_result(work.result())

        try:
            self._pool.submit(fn, *args).add_done_callback(lambda work: _call_soon(loop, finished, work))
        except RuntimeError:  # the pool has closed: the server is stopping
            self._release(cost)
            raise _shutting_down() from None
        self._running.add(answer)
        try:
            return await answer
        finally:
            self._running.discard(answer)

    async def _admit(self, cost: int) -> None:
        if cost > self.total:
            raise UploadError(413, f"decoding this image needs about {_mb(cost)} of memory, more than this "
                                   f"server's decode budget of {_mb(self.total)}; send a smaller image")
        if self._stopped:
            raise _shutting_down()
        if not self._waiting and self._fits(cost):
            self._take(cost)
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((cost, turn))
        try:
            await asyncio.wait_for(asyncio.shield(turn), self.wait_s)  # `stop` may end it with Overloaded
        except asyncio.TimeoutError:
            if _granted(turn):  # admitted in the same instant: take it
                return
            self._give_up(turn)
            raise Overloaded(f"the server is busy decoding other images ({_mb(self.used)} of its "
                             f"{_mb(self.total)} decode budget in use); retry in a moment",
                             retry_after=max(1, math.ceil(self.wait_s))) from None
        except asyncio.CancelledError:  # the client went away, or the server is stopping
            if _granted(turn):
                self._release(cost)
            else:
                self._give_up(turn)
            raise

    def _fits(self, cost: int) -> bool:
        return self.used + cost <= self.total

    def _take(self, cost: int) -> None:
        self.used += cost
        self.peak = max(self.peak, self.used)

    def _release(self, cost: int) -> None:
        self.used -= cost
        self._grant()

    def _grant(self) -> None:
        """Admit waiting decodes in arrival order while the first in line fits."""
        while self._waiting and (self._waiting[0][1].done() or self._fits(self._waiting[0][0])):
            cost, turn = self._waiting.popleft()
            if not turn.done():
                self._take(cost)
                turn.set_result(None)

    def _give_up(self, turn: asyncio.Future[None]) -> None:
        turn.cancel()
        self._waiting = deque(item for item in self._waiting if item[1] is not turn)
        self._grant()  # a large decode that gave up may have held back smaller ones behind it

    def stop(self) -> None:
        """Refuse waiting and new decodes (503); those running finish. Safe to call from a signal handler."""
        self._stopped = True
        if self._loop is not None:
            _call_soon(self._loop, self._refuse_waiting)

    def _refuse_waiting(self) -> None:
        """Answer every waiting decode, and every one running, with 503 now: the server need not wait for them."""
        while self._waiting:
            _, turn = self._waiting.popleft()
            if not turn.done():
                turn.set_exception(_shutting_down())
        for answer in self._running:
            if not answer.done():
                answer.set_exception(_shutting_down())

    def close(self) -> None:
        """Stop, and drop decodes not yet started."""
        self.stop()
        self._pool.shutdown()


class _DaemonPool:
    """Threads that run submitted calls; daemons, so the process exits without finishing a decode nobody
    will read (concurrent.futures' pool would join its threads at exit: seconds for a large image)."""

    def __init__(self, workers: int):
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"cnnlab-decode-{k}", daemon=True)
                         for k in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        if self._closed:
            raise RuntimeError("the decode pool has closed")
        work: Future[T] = Future()
        self._jobs.put((work, fn, args))
        return work

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            work, fn, args = job
            if not work.set_running_or_notify_cancel():
                continue
            try:
                work.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the request that asked
                work.set_exception(exc)

    def shutdown(self) -> None:
        """Cancel the calls not started; each thread ends after its current call."""
        self._closed = True
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[0].cancel()
        for _ in self._threads:
            self._jobs.put(None)


def _shutting_down() -> Overloaded:
    return Overloaded("the server is shutting down; retry in a moment", retry_after=2)


def _granted(turn: asyncio.Future[None]) -> bool:
    return turn.done() and not turn.cancelled() and turn.exception() is None


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the loop has closed: nothing is left to admit
        pass


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"
