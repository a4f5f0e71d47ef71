"""Shadow and canary: a vertical's `candidate` bundle beside its `production` one.

- **Shadow**: a sampled share of requests is also answered by the candidate in its own process
  (`common.serving.shadow_proc.ShadowProcess`; in a thread, `ShadowRunner`, when the process
  cannot start or $VERTICALS_SHADOW_PROCESS=0), after the production answer is out; the
  candidate's answer is never returned, and it writes no
  state (`Predictor.shadow_answer`: a stateful predictor scores the production model's prepared
  inputs instead of recording the request again). Agreement is exported per vertical
  (`verticals_shadow_*`): label/decision agreement and mean |Δp| for classifiers, overlap@k for
  rankings, chrF between outputs for translation. A shadow that falls behind drops work (counted)
  rather than queue without bound: it must never slow production down.
- **Canary**: a share `canary` of routing keys goes to the candidate. The key is a request field
  (the predictor's `routing_field`: customer id, user id) or a header (`header:X-User`, default
  `X-Routing-Key`), hashed to a fixed bucket, so one caller never flips between models; a
  request without a key stays on production.

Settings live in the store (`verticals models rollout`), so every worker and replica reads the
same ones; `AliasFollower` loads and drops the candidate as they change.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from common.predictor import Predictor
from common.serving.middleware import request_headers
from common.serving.prom import SHADOW_COMPARED, SHADOW_METRIC_SUM, SHADOW_SKIPPED

__all__ = ["RolloutSettings", "Rollout", "ShadowRunner", "agreement", "bucket", "compare",
           "make_shadow"]
log = logging.getLogger(__name__)

DEFAULT_HEADER = "X-Routing-Key"


@dataclass(frozen=True)
class RolloutSettings:
    shadow: float = 0.0
    canary: float = 0.0
    key: str | None = None

    @classmethod
    def from_store(cls, d: dict[str, Any]) -> RolloutSettings:
        return cls(float(d.get("shadow", 0)), float(d.get("canary", 0)), d.get("key"))

    @property
    def active(self) -> bool:
        return self.shadow > 0 or self.canary > 0


def admit(runner: Any, n: int, lock: Any) -> bool:
    """Take `n` sampled requests into a shadow runner's pending count, or drop and count them:
    over the runner's CPU budget, or more pending than `max_pending` (a shadow never queues
    without bound)."""
    if runner._over_budget():
        runner._m_skipped["budget"].inc(n)
        return False
    with lock:
        if runner._pending + n > runner.max_pending:
            runner._m_skipped["behind"].inc(n)
            return False
        runner._pending += n
    return True


def bucket(key: str) -> float:
    """A routing key's fixed place in [0, 1): the same key always gets the same model."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2**64


def agreement(primary: BaseModel, shadow: BaseModel) -> dict[str, float]:
    """How far the candidate's answer is from production's, by what the answer carries
    (attribute reads, not model_dump: this runs for every shadowed request)."""
    out: dict[str, float] = {}
    for f in ("label", "decision"):
        if f in type(primary).model_fields:
            out[f"{f}_agreement"] = float(getattr(primary, f) == getattr(shadow, f, None))
    p = getattr(primary, "probability", None)
    probs = getattr(primary, "probabilities", None)
    if isinstance(p, float):
        out["abs_delta_p"] = abs(p - float(shadow.probability))
    elif isinstance(probs, dict) and probs:
        other = getattr(shadow, "probabilities", None) or {}
        out["abs_delta_p"] = sum(abs(v - other.get(k, 0.0)) for k, v in probs.items()) / len(
            probs)
    items = getattr(primary, "items", None) if "items" in type(primary).model_fields else None
    if isinstance(items, list):
        ka = [i.item_id for i in items]
        kb = {i.item_id for i in getattr(shadow, "items", [])}
        out["overlap_at_k"] = len(kb.intersection(ka)) / len(ka) if ka else 1.0
    text = getattr(primary, "translation", None)
    if isinstance(text, str):
        from sacrebleu.metrics import CHRF

        out["chrf"] = CHRF().sentence_score(shadow.translation, [text]).score
    return out


def compare(answers: list, shadow: list) -> tuple[int, int, dict[str, float]]:
    """One batch: (compared, pairs with an error on either side, agreement sums). The one
    comparison for both runners, so a thread and a process give the same numbers."""
    sums: dict[str, float] = {}
    compared = bad = 0
    for a, s in zip(answers, shadow, strict=True):
        if not isinstance(a, BaseModel) or not isinstance(s, BaseModel):
            bad += 1
            continue
        for metric, value in agreement(a, s).items():
            sums[metric] = sums.get(metric, 0.0) + value
        compared += 1
    return compared, bad, sums


def make_shadow(name: str, candidate: Predictor, fraction: float) -> Any:
    """The candidate's shadow: in a child process (see `common.serving.shadow_proc`) unless
    $VERTICALS_SHADOW_PROCESS is 0, then in a thread of this process."""
    if os.environ.get("VERTICALS_SHADOW_PROCESS", "1") == "0":
        return ShadowRunner(name, candidate, fraction)
    from common.serving.shadow_proc import ShadowProcess

    return ShadowProcess(name, candidate, fraction)


def _lower_priority() -> None:
    """The shadow thread runs at a lower OS priority: on a busy machine the scheduler gives
    production's threads the CPU first (Linux: per-thread nice)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # not Linux, or not permitted: same priority
        pass


class ShadowRunner:
    """The candidate answering sampled requests in a thread of the server, off the request
    path (the fallback of `shadow_proc.ShadowProcess`).

    Two bounds keep it from slowing production down: at most `max_pending` requests handed
    over and not yet compared (`behind`), and at most `cpu_share` of one core spent on shadow
    work over the last second (`budget`; $VERTICALS_SHADOW_CPU_SHARE, default 0.1): on a
    saturated machine every Python-level step of the shadow competes with the server's event
    loop for the interpreter lock, so past its budget the shadow samples fewer requests, and
    `verticals_shadow_skipped_total` says how many.
    """

    def __init__(self, name: str, candidate: Predictor, fraction: float, max_pending: int = 256,
                 cpu_share: float | None = None):
        self.name, self.candidate, self.fraction = name, candidate, fraction
        self.max_pending = max_pending  # requests handed over and not yet compared
        self.cpu_share = cpu_share if cpu_share is not None else float(
            os.environ.get("VERTICALS_SHADOW_CPU_SHARE", "0.1"))
        self._pending = 0
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"shadow-{name}",
                                            initializer=_lower_priority)
        self._version = candidate.bundle.version
        self._m_compared = SHADOW_COMPARED.labels(name, self._version)
        self._m_skipped = {r: SHADOW_SKIPPED.labels(name, r)
                           for r in ("behind", "budget", "candidate_error", "error_answer")}
        self._m_metric: dict[str, Any] = {}
        self._rng = random.Random()
        self._window_start = time.monotonic()
        self._window_cpu = 0.0  # shadow thread CPU seconds in the current window

    def _over_budget(self) -> bool:
        now = time.monotonic()
        elapsed = now - self._window_start
        if elapsed >= 1.0:  # a new one-second window
            self._window_start, self._window_cpu = now, 0.0
            return False
        return self._window_cpu > self.cpu_share * max(elapsed, 0.05)

    def offer(self, primary: Predictor, requests: list, where: list[int], prepared: Any,
              results: list) -> None:
        """Called in the model thread after a production batch; samples and hands off."""
        idx = [j for j in range(len(where)) if self._rng.random() < self.fraction]
        if not idx:
            return
        if not admit(self, len(idx), self._lock):
            return
        sub = primary.select_prepared(prepared, idx)
        reqs = [requests[where[j]] for j in idx]
        answers = [results[where[j]] for j in idx]
        self._executor.submit(self._run, primary, reqs, sub, answers)

    def _run(self, primary: Predictor, requests: list, prepared: Any, answers: list) -> None:
        t0 = time.thread_time()
        try:
            shadow = self.candidate.shadow_answer(requests, prepared, primary)
            compared, bad, sums = compare(answers, shadow)
            for metric, total in sums.items():  # one update per batch, not per request
                child = self._m_metric.get(metric)
                if child is None:
                    child = self._m_metric[metric] = SHADOW_METRIC_SUM.labels(
                        self.name, self._version, metric)
                child.inc(total)
            self._m_compared.inc(compared)
            if bad:
                self._m_skipped["error_answer"].inc(bad)
        except Exception as e:  # a failing candidate must never touch production
            self._m_skipped["candidate_error"].inc(len(requests))
            log.warning("%s: shadow candidate %s failed: %s", self.name, self._version, e)
        finally:
            self._window_cpu += time.thread_time() - t0
            with self._lock:
                self._pending -= len(requests)

    def wait_ready(self, timeout_s: float = 0.0) -> bool:
        return True  # the candidate is already loaded in this process

    def drain(self, timeout_s: float = 30.0) -> bool:
        """Until everything handed over has been compared."""
        t_end = time.monotonic() + timeout_s
        while self._pending and time.monotonic() < t_end:
            time.sleep(0.005)
        return not self._pending

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class Rollout:
    """One vertical's candidate and its settings; picks the model for each request."""

    def __init__(self, name: str, settings: RolloutSettings, candidate_served: Any,
                 shadow: ShadowRunner | None, routing_field: str | None):
        self.name, self.settings = name, settings
        self.candidate = candidate_served  # a ServedPredictor sharing production's model thread
        self.shadow = shadow
        self.key = settings.key or routing_field or f"header:{DEFAULT_HEADER}"

    @property
    def version(self) -> str:
        return self.candidate.predictor.bundle.version

    def routing_key(self, request: BaseModel) -> str | None:
        if self.key.startswith("header:"):
            headers = request_headers.get() or {}
            raw = headers.get(self.key[7:].lower().encode())
            return raw.decode("latin-1") if raw else None
        value = getattr(request, self.key, None)
        return None if value is None else str(value)

    def to_candidate(self, request: BaseModel) -> bool:
        if self.settings.canary <= 0:
            return False
        key = self.routing_key(request)
        return key is not None and bucket(f"{self.name}:{key}") < self.settings.canary
