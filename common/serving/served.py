"""A Predictor behind a dynamic batcher.

Requests from concurrent HTTP handlers queue up; one worker task takes up to `max_batch_size`
of them (waiting at most `max_wait_ms` after the first), drops those whose deadline has passed
(they never reach the model), and runs `Predictor.run_each` in a single model thread so the
event loop keeps accepting requests. The queue is bounded: a full queue is `Overloaded` (503 +
Retry-After). `stop()` drains: no new requests, everything queued is answered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel

from common.errors import DeadlineExceeded, NotReady, Overloaded, VerticalsError
from common.predictor import Predictor
from common.serving.middleware import request_timeout
from common.serving.prom import BATCH_SIZE, QUEUE_DEPTH, STAGE_TIME

__all__ = ["ServedPredictor"]
log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class _Pending:
    request: BaseModel
    deadline: float
    future: asyncio.Future
    enqueued: float


class ServedPredictor:
    """Async front of one Predictor. Vertical routers call `await served.predict(request)`,
    `await served.predict_many(requests)`, or `await served.call(fn, ...)` for side work
    (e.g. recording events) that must not race with `predict_batch`."""

    def __init__(
        self,
        predictor: Predictor,
        max_batch_size: int | None = None,
        max_wait_ms: float | None = None,
        max_queue: int = 2048,
        timeout_s: float = 30.0,
    ):
        self.predictor = predictor
        self.name = predictor.vertical
        self.max_batch_size = max_batch_size or predictor.max_batch_size
        self.max_wait_s = (max_wait_ms if max_wait_ms is not None else predictor.max_wait_ms) / 1e3
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"model-{self.name}")
        self._accepting = False
        self._inflight = 0
        self.worker_failed: BaseException | None = None

    # ---- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        self._queue = asyncio.Queue(self.max_queue)
        self._accepting = True
        self._worker = asyncio.create_task(self._loop(), name=f"batcher-{self.name}")

    async def stop(self, drain: bool = True, timeout_s: float = 30.0) -> None:
        """Stop accepting; with `drain`, answer what is queued first."""
        self._accepting = False
        if drain and self._queue is not None:
            t_end = time.monotonic() + timeout_s
            while (self._queue.qsize() or self._inflight) and time.monotonic() < t_end:
                await asyncio.sleep(0.01)
        if self._worker:
            self._worker.cancel()
            try:
                await self._worker
            except (asyncio.CancelledError, Exception):
                pass
        self._executor.shutdown(wait=False)

    def healthy(self) -> bool:
        alive = self._worker is not None and not self._worker.done()
        return alive and self.worker_failed is None and self.predictor.health()

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize() if self._queue else 0

    # ---- requests -------------------------------------------------------------------------
    def _submit(self, request: BaseModel, timeout_s: float | None) -> asyncio.Future:
        if not self._accepting or self._queue is None:
            raise NotReady(f"{self.name} is not accepting requests (starting or draining)")
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        fut = loop.create_future()
        timeout_s = timeout_s or request_timeout.get()
        try:
            self._queue.put_nowait(_Pending(request, now + (timeout_s or self.timeout_s), fut, now))
        except asyncio.QueueFull:
            raise Overloaded(f"{self.name} queue is full ({self.max_queue}); retry later") from None
        QUEUE_DEPTH.labels(self.name).inc()
        return fut

    async def predict(self, request: BaseModel, timeout_s: float | None = None) -> BaseModel:
        timeout_s = timeout_s or request_timeout.get()
        fut = self._submit(request, timeout_s)
        return await self._await(fut, timeout_s)

    async def predict_many(
        self, requests: list[BaseModel], timeout_s: float | None = None
    ) -> list[BaseModel]:
        """Submit all, answer all; the first per-item error is raised (with its field)."""
        timeout_s = timeout_s or request_timeout.get()
        futs = [self._submit(r, timeout_s) for r in requests]
        return list(await asyncio.gather(*(self._await(f, timeout_s) for f in futs)))

    async def _await(self, fut: asyncio.Future, timeout_s: float | None) -> BaseModel:
        try:
            # small grace so the batch worker, which owns deadlines, answers first
            return await asyncio.wait_for(asyncio.shield(fut), (timeout_s or self.timeout_s) + 0.5)
        except TimeoutError:
            raise DeadlineExceeded(f"{self.name} did not answer in time") from None

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn` in the model thread (serialised with batches)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    # ---- the batch worker -----------------------------------------------------------------
    async def _collect(self) -> list[_Pending]:
        assert self._queue is not None
        first = await self._queue.get()
        batch = [first]
        t_end = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            left = t_end - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except TimeoutError:
                break
        QUEUE_DEPTH.labels(self.name).dec(len(batch))
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            now = time.monotonic()
            live = []
            for p in batch:
                if p.future.done():
                    continue
                if p.deadline <= now:  # expired while queued: never reaches the model
                    p.future.set_exception(
                        DeadlineExceeded(f"{self.name}: deadline passed in queue")
                    )
                else:
                    live.append(p)
            if not live:
                continue
            self._inflight = len(live)
            STAGE_TIME.labels(self.name, "queue").observe(now - min(p.enqueued for p in live))
            BATCH_SIZE.labels(self.name).observe(len(live))
            t0 = time.monotonic()
            try:
                results = await loop.run_in_executor(
                    self._executor, self.predictor.run_each, [p.request for p in live]
                )
            except VerticalsError as e:
                results = [e] * len(live)
            except Exception as e:  # a model crash answers 500 for this batch, worker lives on
                log.exception("%s: predict_batch failed", self.name)
                results = [e] * len(live)
            finally:
                self._inflight = 0
            STAGE_TIME.labels(self.name, "model").observe(time.monotonic() - t0)
            for p, r in zip(live, results, strict=True):
                if p.future.done():
                    continue
                if isinstance(r, BaseException):
                    p.future.set_exception(r)
                else:
                    p.future.set_result(r)
