"""A Predictor behind a dynamic batcher.

Requests from concurrent HTTP handlers queue up; one worker task takes up to `max_batch_size`
of them (waiting at most `max_wait_ms` after the first), drops those whose deadline has passed
(they never reach the model), and runs `Predictor.run_each` in a single model thread so the
event loop keeps accepting requests. The queue is bounded: a full queue is `Overloaded` (503 +
Retry-After). `stop()` drains: no new requests, everything queued is answered.

Cheap models run on the event loop itself: when recent batches took under `inline_below_ms`
(and no `call()` is in flight) the batch runs inline. For a model of ~100 µs per batch the
hand-off to the model thread costs more than the model: the two threads fight for the GIL, and
each of the model's many short GIL re-acquisitions can wait for the busy loop thread's switch
interval (5 ms). A slow batch sends the next ones back to the thread at once.

`start()` also tunes the garbage collector once per process (see `_tune_gc`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel

from common.errors import DeadlineExceeded, NotReady, Overloaded, VerticalsError
from common.predictor import Predictor
from common.serving.middleware import request_arrival, request_id, request_timeout
from common.serving.prom import (
    BATCH_SIZE,
    MODEL_LATENCY,
    MODEL_REQUESTS,
    QUEUE_DEPTH,
    STAGE_TIME,
)
from common.serving.workers import mark_loaded, unmark

__all__ = ["ServedPredictor"]
log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class _Pending:
    request: BaseModel
    deadline: float
    future: asyncio.Future
    enqueued: float
    started: bool = False  # picked into a batch: the model will answer it (and may record it)
    rid: str | None = None  # the HTTP request's id, for the prediction log


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
        inline_below_ms: float = 2.0,
        executor: ThreadPoolExecutor | None = None,
        candidate: bool = False,
    ):
        self.predictor = predictor
        self.name = predictor.vertical
        self.max_batch_size = max_batch_size or predictor.max_batch_size
        self.max_wait_s = (max_wait_ms if max_wait_ms is not None else predictor.max_wait_ms) / 1e3
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self.inline_below_s = inline_below_ms / 1e3
        # A deque and one wake-up future instead of asyncio.Queue: no Task per waited item.
        self._queue: deque[_Pending] | None = None
        self._wakeup: asyncio.Future | None = None
        self._worker: asyncio.Task | None = None
        # A canary candidate shares production's model thread: models that share state (the
        # fraud feature store) never run at the same time.
        self._own_executor = executor is None
        self.candidate = candidate  # a canary candidate: not part of the worker's readiness
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix=f"model-{self.name}")
        self.shadow: Any = None  # common.serving.rollout.ShadowRunner while a shadow is on
        self.monitor: Any = None  # common.monitoring.Monitor: offered every answered batch
        self._in_executor = 0  # batches and call()s submitted to the model thread, not done
        self._batch_time_s: float | None = None  # rises at once on a slow batch, decays slowly
        self._item_time_s: float | None = None  # wall seconds per item of recent batches
        self._accepting = False
        self._inflight = 0
        self.worker_failed: BaseException | None = None
        # metric children resolved once: .labels() costs microseconds on every request
        self._m_queue_depth = QUEUE_DEPTH.labels(self.name)
        self._m_batch_size = BATCH_SIZE.labels(self.name)
        self._m_queue_time = STAGE_TIME.labels(self.name, "queue")
        self._m_model_time = STAGE_TIME.labels(self.name, "model")
        self._m_version: dict[tuple[str, str], tuple] = {}

    # ---- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        _tune_gc()
        self._queue = deque()
        self._accepting = True
        self._worker = asyncio.create_task(self._loop(), name=f"batcher-{self.name}")
        if not self.candidate:
            mark_loaded(self.name)

    async def stop(self, drain: bool = True, timeout_s: float = 30.0) -> None:
        """Stop accepting; with `drain`, answer what is queued first."""
        self._accepting = False
        if not self.candidate:
            unmark(self.name)
        if drain and self._queue is not None:
            t_end = time.monotonic() + timeout_s
            while (self._queue or self._inflight) and time.monotonic() < t_end:
                await asyncio.sleep(0.01)
        if self._worker:
            self._worker.cancel()
            try:
                await self._worker
            except (asyncio.CancelledError, Exception):
                pass
        if self._own_executor:
            self._executor.shutdown(wait=False)

    def healthy(self) -> bool:
        alive = self._worker is not None and not self._worker.done()
        return alive and self.worker_failed is None and self.predictor.health()

    async def readiness(self, timeout_s: float = 2.0) -> str | None:
        """None when ready, else why not. `Predictor.health()` may do I/O (the fraud
        predictor pings its feature store), so it runs off the event loop, bounded by
        `timeout_s`; a predictor may explain a False with a `health_reason` attribute."""
        if self._worker is None or self._worker.done() or self.worker_failed is not None:
            return "batch worker is not running"

        def check() -> str | None:
            if self.predictor.health():
                return None
            return getattr(self.predictor, "health_reason", None) or "predictor is unhealthy"

        try:
            return await asyncio.wait_for(asyncio.to_thread(check), timeout_s)
        except TimeoutError:
            return f"health check did not answer within {timeout_s:g} s"

    @property
    def queue_depth(self) -> int:
        return len(self._queue) if self._queue else 0

    # ---- requests -------------------------------------------------------------------------
    def _submit(self, request: BaseModel, timeout_s: float | None, index: int | None = None
                ) -> _Pending:
        if not self._accepting or self._queue is None:
            raise NotReady(f"{self.name} is not accepting requests (starting or draining)")
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        timeout_s = timeout_s or request_timeout.get() or self.timeout_s
        # the deadline runs from the request's arrival at the server, not from this queue
        deadline = (request_arrival.get() or now) + timeout_s
        if len(self._queue) >= self.max_queue:
            raise Overloaded(f"{self.name} queue is full ({self.max_queue}); retry later")
        # Admission: a request that the queue ahead of it would keep past its deadline is
        # refused now, cheaply, instead of taking a queue slot and timing out later; under
        # overload this keeps the accepted requests within their deadline.
        per_item = self._item_time_s
        if per_item is not None and (len(self._queue) + 1) * per_item > ADMIT_SHARE * (
            deadline - now
        ):
            raise Overloaded(f"{self.name} is overloaded: the queue would not answer within "
                             f"the deadline of {timeout_s:g} s; retry later")
        rid = request_id.get()
        if index is not None and rid is not None:  # item k of a batch route: `<id>.<k>`
            rid = f"{rid}.{index}"
        p = _Pending(request, deadline, loop.create_future(), now, rid=rid)
        self._queue.append(p)
        self._m_queue_depth.inc()
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)
        return p

    def shed_reason(self, timeout_s: float | None) -> str | None:
        """Why a new request could not be answered within its timeout now (the queue ahead
        of it, at the recent model time per item), or None. Checked before the body is read."""
        per_item = self._item_time_s
        timeout_s = timeout_s or self.timeout_s
        if per_item is None or not self._queue or (
            len(self._queue) * per_item <= ADMIT_SHARE * timeout_s
        ):
            return None
        return (f"{self.name} is overloaded: the queue would not answer within the deadline "
                f"of {timeout_s:g} s; retry later")

    async def predict(self, request: BaseModel, timeout_s: float | None = None,
                      index: int | None = None) -> BaseModel:
        """Answer one request; `index`: its place in a batch route's body (for its log id)."""
        timeout_s = timeout_s or request_timeout.get()
        p = self._submit(request, timeout_s, index)
        return await self._await(p, timeout_s)

    async def predict_many(
        self, requests: list[BaseModel], timeout_s: float | None = None
    ) -> list[BaseModel]:
        """Submit all, answer all; the first per-item error is raised (with its field)."""
        timeout_s = timeout_s or request_timeout.get()
        pending = [self._submit(r, timeout_s, k) for k, r in enumerate(requests)]
        return list(await asyncio.gather(*(self._await(p, timeout_s) for p in pending)))

    async def _await(self, p: _Pending, timeout_s: float | None) -> BaseModel:
        # A timer that fails the future, rather than wait_for(shield(...)): the same 504 at
        # the same time for a fraction of the cost. The batch worker owns deadlines (it drops
        # expired requests before the model); the timer answers 504 only for a request still
        # waiting, so a 504 means the model never saw it (nothing was recorded). A request
        # already in a batch gets its answer, unless the model overruns the server's own
        # timeout after the deadline (a hung model).
        fut = p.future
        timer = asyncio.get_running_loop().call_at(
            p.deadline + 0.05, _expire, p, self.name, self.timeout_s
        )
        t0 = time.perf_counter()
        outcome = "ok"
        try:
            return await fut
        except VerticalsError as e:
            outcome = e.code
            raise
        finally:
            timer.cancel()
            self._count(outcome, time.perf_counter() - t0)

    def _count(self, outcome: str, seconds: float) -> None:
        """Requests and latency per model version (canary vs production in /metrics)."""
        version = self.predictor.bundle.version
        key = (version, outcome)
        children = self._m_version.get(key)
        if children is None:
            children = self._m_version[key] = (
                MODEL_REQUESTS.labels(self.name, version, outcome),
                MODEL_LATENCY.labels(self.name, version),
            )
        children[0].inc()
        children[1].observe(seconds)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn` in the model thread (serialised with batches)."""
        loop = asyncio.get_running_loop()
        self._in_executor += 1  # keeps batches off the loop thread while `fn` runs
        try:
            return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))
        finally:
            self._in_executor -= 1

    # ---- the batch worker -----------------------------------------------------------------
    async def _collect(self) -> list[_Pending]:
        assert self._queue is not None
        queue, loop = self._queue, asyncio.get_running_loop()
        while not queue:
            await self._sleep_until_submit(None)
        batch = [queue.popleft()]
        t_end = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            if queue:
                batch.append(queue.popleft())
                continue
            left = t_end - loop.time()
            if left <= 0:
                break
            await self._sleep_until_submit(left)
        self._m_queue_depth.dec(len(batch))
        return batch

    async def _sleep_until_submit(self, timeout_s: float | None) -> None:
        """Until the next `_submit` (or `timeout_s`): one future, no Task per wait."""
        loop = asyncio.get_running_loop()
        self._wakeup = loop.create_future()
        timer = loop.call_later(timeout_s, _wake, self._wakeup) if timeout_s else None
        try:
            await self._wakeup
        finally:
            self._wakeup = None
            if timer is not None:
                timer.cancel()

    def _run_batch(self, requests: list[BaseModel], rids: list[str | None] | None = None
                   ) -> list[BaseModel | VerticalsError]:
        # CPU time of the calling thread, not wall time: a batch that was merely preempted by
        # other processes must not look slow and push a cheap model off the loop.
        t0 = time.thread_time()
        monitor = self.monitor.bind(rids) if self.monitor is not None else None
        try:
            return self.predictor.run_each(requests, shadow=self.shadow, monitor=monitor)
        finally:
            dt = time.thread_time() - t0
            est = self._batch_time_s
            self._batch_time_s = dt if est is None or dt > est else 0.9 * est + 0.1 * dt

    def _inline(self) -> bool:
        est = self._batch_time_s
        return est is not None and est < self.inline_below_s and not self._in_executor

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
            for p in live:
                p.started = True
            self._inflight = len(live)
            self._m_queue_time.observe(now - min(p.enqueued for p in live))
            self._m_batch_size.observe(len(live))
            t0 = time.monotonic()
            requests = [p.request for p in live]
            rids = [p.rid for p in live]
            try:
                if self._inline():
                    results = self._run_batch(requests, rids)
                else:
                    self._in_executor += 1
                    try:
                        results = await loop.run_in_executor(
                            self._executor, self._run_batch, requests, rids
                        )
                    finally:
                        self._in_executor -= 1
            except VerticalsError as e:
                results = [e] * len(live)
            except Exception as e:  # a model crash answers 500 for this batch, worker lives on
                log.exception("%s: predict_batch failed", self.name)
                results = [e] * len(live)
            finally:
                self._inflight = 0
            dt = time.monotonic() - t0
            self._m_model_time.observe(dt)
            # model seconds per item at the current batch sizes (admission control)
            est, per = self._item_time_s, dt / len(live)
            self._item_time_s = per if est is None else 0.8 * est + 0.2 * per
            for p, r in zip(live, results, strict=True):
                if p.future.done():
                    continue
                if isinstance(r, BaseException):
                    p.future.set_exception(r)
                else:
                    p.future.set_result(r)


# Admit a request only if the queue ahead of it should clear within this share of its
# remaining time: the estimate is a recent average, the client's own wait before the server
# reads the request is invisible here, and a queue a few batches deep keeps the model busy.
ADMIT_SHARE = 0.3
_GC_TUNED = False
GC_GEN0_THRESHOLD = 20_000


def _tune_gc() -> None:
    """Once per process, after the model is loaded: freeze the start-up heap (torch, the model,
    the app) so full collections stop rescanning it, and collect the young generation every
    20,000 allocations rather than 700. With 64 requests in flight each request's objects
    outlive several gen-0 passes and get promoted; with the defaults the collector cost the
    server more CPU than the model (MLP bench: ~480 → ~260 µs of CPU per request, p99 halved)."""
    global _GC_TUNED
    if _GC_TUNED:
        return
    _GC_TUNED = True
    gc.freeze()
    g0, g1, g2 = gc.get_threshold()
    if 0 < g0 < GC_GEN0_THRESHOLD:
        gc.set_threshold(GC_GEN0_THRESHOLD, g1, g2)


def _expire(p: _Pending, name: str, grace_s: float | None) -> None:
    if p.future.done():
        return
    if p.started and grace_s is not None:  # in the model now: wait for its answer, once more
        asyncio.get_running_loop().call_later(grace_s, _expire, p, name, None)
        return
    p.future.set_exception(DeadlineExceeded(f"{name} did not answer in time"))


def _wake(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)
