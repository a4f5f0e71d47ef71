"""Online feature state: per-customer and per-terminal history for scoring one transaction.

`MemoryStore` keeps it in-process (the default); `RedisStore` keeps it in Redis so several
replicas share it. Both answer `observe(tx)` with the window `Aggregates` of `features.derive`
(the history strictly earlier in (time, id) order plus the transaction itself) and record the
transaction; `label(tx_id, fraud)` attaches a (late) label that feeds the delayed terminal
windows. Re-scoring a transaction id already recorded excludes the stored copy, so a retry gets
the same answer. History older than the longest window (relative to the transaction being
recorded) is pruned.

When Redis cannot be reached (stopped, paused, partitioned, out of memory) every call raises
`StoreUnavailable` (503 `feature_store_unavailable`, field `store`) within about
2 × `timeout_s`, never a hang, and `available()` turns false; the client reconnects by itself
when Redis answers again. Each observe is one MULTI/EXEC transaction, so a transaction is
recorded whole or not at all. A 503 after the request reached Redis (a timeout) may still have
been recorded; a retry of the same transaction is safe: its members are keyed by id, so it is
recorded once and answers as the first try would have.
"""

from __future__ import annotations

import bisect
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pandas as pd

from common.errors import NotReady
from fraud_detection.features import DAY, LARGE_DAYS, LARGE_FACTOR, LAST_K, WINDOWS, Aggregates

__all__ = ["Tx", "FeatureStore", "MemoryStore", "RedisStore", "StoreUnavailable",
           "SNAPSHOT_COLUMNS"]
log = logging.getLogger(__name__)
T = TypeVar("T")
SNAPSHOT_COLUMNS = ["TRANSACTION_ID", "SECONDS", "CUSTOMER_ID", "TERMINAL_ID", "CENTS", "LABEL"]


class StoreUnavailable(NotReady):
    """The feature store cannot be reached: the transaction was not scored (503, retry)."""

    code = "feature_store_unavailable"

    def __init__(self, reason: str):
        super().__init__(f"feature store unavailable ({reason}); retry later: a retried "
                         "transaction is recorded once", field="store")


@dataclass(frozen=True)
class Tx:
    transaction_id: int
    seconds: int
    customer_id: int
    terminal_id: int
    cents: int


class FeatureStore(ABC):
    """History of recent transactions (and their labels) for online features."""

    def __init__(self, delay_days: int = 7):
        self.delay = delay_days * DAY
        self.c_horizon = max(WINDOWS) * DAY
        self.t_horizon = self.delay + max(WINDOWS) * DAY

    @abstractmethod
    def observe(self, tx: Tx) -> Aggregates:
        """Aggregates for `tx` from earlier history (plus tx itself), then record tx."""

    @abstractmethod
    def label(self, transaction_id: int, fraud: bool) -> bool:
        """Attach a label to a recorded transaction; False if the id is unknown (pruned)."""

    @abstractmethod
    def load(self, snapshot: pd.DataFrame) -> None:
        """Replace the state by a snapshot (SNAPSHOT_COLUMNS; LABEL -1 when unknown)."""

    @abstractmethod
    def snapshot(self) -> pd.DataFrame:
        """The state as a frame of SNAPSHOT_COLUMNS."""

    def available(self) -> bool:
        """Whether the store answers now (cheap; an in-process store always does)."""
        return True

    def unavailable_reason(self) -> str | None:
        """Why `available()` is false, naming the store; None while it is available."""
        return None

    # shared arithmetic: the same sums for both backends, mirroring features.batch_aggregates
    def _aggregates(self, tx: Tx, c_hist: list[tuple[int, int, int]],
                    t_hist: list[tuple[int, int, int]], frauds: set[int]) -> Aggregates:
        """c_hist: the card's (seconds, id, cents) in its 30-day window; t_hist: the terminal's
        (seconds, id, cents) up to t - delay; frauds: the terminal's ids labelled fraud."""
        earlier = [(s, c) for s, i, c in c_hist
                   if tx.seconds - max(WINDOWS) * DAY < s <= tx.seconds
                   and i != tx.transaction_id]
        c_n = [sum(1 for s, _ in earlier if s > tx.seconds - w * DAY) + 1 for w in WINDOWS]
        c_cents = [sum(c for s, c in earlier if s > tx.seconds - w * DAY) + tx.cents
                   for w in WINDOWS]
        c_max = max((c for _, c in earlier), default=-1)
        c_large = sum(1 for s, c in earlier if s > tx.seconds - LARGE_DAYS * DAY
                      and c * c_n[-1] > LARGE_FACTOR * c_cents[-1])

        hi = tx.seconds - self.delay
        known = sorted((s, i, c) for s, i, c in t_hist if hi - max(WINDOWS) * DAY < s <= hi)
        t_n = [sum(1 for s, _, _ in known if s > hi - w * DAY) for w in WINDOWS]
        t_f = [sum(1 for s, i, _ in known if s > hi - w * DAY and i in frauds) for w in WINDOWS]
        flags = [i in frauds for _, i, _ in known]
        f_rows = [(s, c) for (s, _, c), f in zip(known, flags, strict=True) if f]
        legit = [s for (s, _, _), f in zip(known, flags, strict=True) if not f]
        today = tx.seconds // DAY
        trail = len(flags) - 1 - max((k for k, f in enumerate(flags) if not f), default=-1)
        return Aggregates(
            c_n=c_n, c_cents=c_cents, c_max=c_max, c_large=c_large, t_n=t_n, t_f=t_f,
            t_last=sum(flags[-LAST_K:]),
            t_first_age=today - f_rows[0][0] // DAY if f_rows else -1,
            t_legit_age=today - legit[-1] // DAY if legit else -1,
            t_fraud_days=len({s // DAY for s, _ in f_rows}),
            t_trail=trail,
            t_fraud_cents=sum(c for _, c in f_rows),
        )


class MemoryStore(FeatureStore):
    """In-process state: sorted lists per customer and terminal, a dict of transactions."""

    def __init__(self, delay_days: int = 7):
        super().__init__(delay_days)
        self.cust: dict[int, list[tuple[int, int, int]]] = {}
        self.term: dict[int, list[tuple[int, int, int]]] = {}  # (seconds, id, cents)
        self.txs: dict[int, list[int]] = {}  # id -> [customer, terminal, seconds, cents, label]
        self.frauds: dict[int, set[int]] = {}  # terminal -> ids labelled fraud
        self._recorded = 0

    def observe(self, tx: Tx) -> Aggregates:
        ch = self.cust.setdefault(tx.customer_id, [])
        th = self.term.setdefault(tx.terminal_id, [])
        i0 = bisect.bisect_right(ch, (tx.seconds - self.c_horizon, 2**63, 0))
        lo = bisect.bisect_right(th, (tx.seconds - self.t_horizon, 2**63, 0))
        hi = bisect.bisect_right(th, (tx.seconds - self.delay, 2**63, 0))
        frauds = self.frauds.get(tx.terminal_id, set())
        aggs = self._aggregates(tx, ch[i0:], th[lo:hi], frauds)
        self._record(tx, label=-1)
        return aggs

    def _record(self, tx: Tx, label: int) -> None:
        old = self.txs.get(tx.transaction_id)
        if old is not None:
            if old[:4] == [tx.customer_id, tx.terminal_id, tx.seconds, tx.cents]:
                return  # a retry: already recorded
            self._forget(tx.transaction_id)
        ch = self.cust.setdefault(tx.customer_id, [])
        bisect.insort(ch, (tx.seconds, tx.transaction_id, tx.cents))
        del ch[: bisect.bisect_right(ch, (tx.seconds - self.c_horizon, 2**63, 0))]
        th = self.term.setdefault(tx.terminal_id, [])
        bisect.insort(th, (tx.seconds, tx.transaction_id, tx.cents))
        del th[: bisect.bisect_right(th, (tx.seconds - self.t_horizon, 2**63, 0))]
        self.txs[tx.transaction_id] = [tx.customer_id, tx.terminal_id, tx.seconds, tx.cents, -1]
        if label >= 0:
            self.label(tx.transaction_id, bool(label))
        self._recorded += 1
        if self._recorded % 50_000 == 0:
            self._prune_index(tx.seconds)

    def _forget(self, tid: int) -> None:
        c, t, s, cents, _ = self.txs.pop(tid)
        for lst, item in ((self.cust.get(c), (s, tid, cents)), (self.term.get(t), (s, tid, cents))):
            if lst and item in lst:
                lst.remove(item)
        self.frauds.get(t, set()).discard(tid)

    def _prune_index(self, now: int) -> None:
        old = [i for i, v in self.txs.items() if v[2] <= now - self.t_horizon]
        for i in old:
            c, t, *_ = self.txs.pop(i)
            self.frauds.get(t, set()).discard(i)

    def label(self, transaction_id: int, fraud: bool) -> bool:
        rec = self.txs.get(transaction_id)
        if rec is None:
            return False
        rec[4] = int(fraud)
        fr = self.frauds.setdefault(rec[1], set())
        if fraud:
            fr.add(transaction_id)
        else:
            fr.discard(transaction_id)
        return True

    def load(self, snapshot: pd.DataFrame) -> None:
        self.__init__(self.delay // DAY)
        snap = snapshot.sort_values(["SECONDS", "TRANSACTION_ID"], kind="stable")
        for row in snap.itertuples(index=False):
            tx = Tx(int(row.TRANSACTION_ID), int(row.SECONDS), int(row.CUSTOMER_ID),
                    int(row.TERMINAL_ID), int(row.CENTS))
            self._record(tx, int(row.LABEL))

    def snapshot(self) -> pd.DataFrame:
        rows = [[i, v[2], v[0], v[1], v[3], v[4]] for i, v in self.txs.items()]
        return pd.DataFrame(rows, columns=SNAPSHOT_COLUMNS).astype(np.int64)


class RedisStore(FeatureStore):
    """State in Redis (sorted sets scored by time), shared by replicas under `namespace`.

    Keys: {ns}:c:<customer> and {ns}:t:<terminal> members "<id>:<cents>"; {ns}:f:<terminal>
    (fraud-labelled) members "<id>"; {ns}:tx hash id -> "customer:terminal:seconds:cents",
    {ns}:txt the same ids scored by time (to prune), {ns}:label hash id -> 0/1.
    Each observe is one MULTI/EXEC round trip.
    """

    CHECK_EVERY_S = 1.0  # available() pings at most this often

    def __init__(self, url: str, namespace: str, delay_days: int = 7, timeout_s: float = 0.3):
        super().__init__(delay_days)
        import redis
        from redis.backoff import ConstantBackoff
        from redis.retry import Retry

        # Short socket timeouts and one quick retry: a dead or paused Redis answers
        # StoreUnavailable in ~2 × timeout_s instead of hanging a batch (the default is 5 s
        # and three retries). The retry also reconnects a pooled connection that a Redis
        # restart broke, so the first request after an outage does not fail for nothing.
        kw = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
        self.r = redis.Redis.from_url(url, retry=Retry(ConstantBackoff(0.05), 1), **kw)
        # health pings: no retry, so readiness costs at most one timeout
        self._ping = redis.Redis.from_url(url, retry=Retry(ConstantBackoff(0), 0), **kw)
        ck = self.r.connection_pool.connection_kwargs
        self.where = f"redis at {ck.get('host', ck.get('path', '?'))}:{ck.get('port', '')}"
        self.ns = f"fraud:{namespace}"
        self._errors = _outage_errors()
        self._down: str | None = None  # reason while the last call or ping failed
        self._checked = float("-inf")

    def _call(self, fn: Callable[[], T]) -> T:
        """Run one store operation, turning an outage into StoreUnavailable."""
        try:
            out = fn()
        except self._errors as e:
            self._mark_down(e)
            raise StoreUnavailable(f"{self.where}: {type(e).__name__}") from None
        if self._down is not None:
            log.warning("feature store %s is back", self.where)
            self._down = None
        return out

    def _mark_down(self, e: Exception) -> None:
        if self._down is None:  # log transitions, not every failed request
            log.error("feature store %s unreachable: %s", self.where, type(e).__name__)
        self._down = f"{self.where} unreachable ({type(e).__name__})"
        self._checked = time.monotonic()

    def available(self) -> bool:
        if time.monotonic() - self._checked < self.CHECK_EVERY_S:
            return self._down is None
        try:
            self._ping.ping()
        except self._errors as e:
            self._mark_down(e)
            return False
        self._checked = time.monotonic()
        if self._down is not None:
            log.warning("feature store %s is back", self.where)
            self._down = None
        return True

    def unavailable_reason(self) -> str | None:
        return None if self.available() else f"feature store {self._down}"

    def observe(self, tx: Tx) -> Aggregates:
        ns, s = self.ns, tx.seconds
        hi = s - self.delay
        p = self.r.pipeline(transaction=True)
        p.zrangebyscore(f"{ns}:c:{tx.customer_id}", f"({s - self.c_horizon}", s, withscores=True)
        p.zrangebyscore(f"{ns}:t:{tx.terminal_id}", f"({s - self.t_horizon}", hi, withscores=True)
        p.zrangebyscore(f"{ns}:f:{tx.terminal_id}", f"({s - self.t_horizon}", hi)
        self._write(p, tx)
        c_raw, t_raw, f_raw = self._call(p.execute)[:3]
        ch, th = ([(int(sc), *map(int, m.split(b":"))) for m, sc in raw] for raw in (c_raw, t_raw))
        return self._aggregates(tx, ch, th, {int(m) for m in f_raw})

    @staticmethod
    def _encode(tx: Tx) -> str:
        return f"{tx.customer_id}:{tx.terminal_id}:{tx.seconds}:{tx.cents}"

    def _write(self, p, tx: Tx) -> None:
        ns, s, tid = self.ns, tx.seconds, tx.transaction_id
        p.zadd(f"{ns}:c:{tx.customer_id}", {f"{tid}:{tx.cents}": s})
        p.zremrangebyscore(f"{ns}:c:{tx.customer_id}", "-inf", s - self.c_horizon)
        p.zadd(f"{ns}:t:{tx.terminal_id}", {f"{tid}:{tx.cents}": s})
        p.zremrangebyscore(f"{ns}:t:{tx.terminal_id}", "-inf", s - self.t_horizon)
        p.zremrangebyscore(f"{ns}:f:{tx.terminal_id}", "-inf", s - self.t_horizon)
        p.hset(f"{ns}:tx", tid, self._encode(tx))
        p.zadd(f"{ns}:txt", {str(tid): s})
        self._writes = getattr(self, "_writes", 0) + 1
        if self._writes % 1000 == 0:  # forget ids past every window (bounded memory)
            self._prune_index(s)

    def _prune_index(self, now: int) -> None:
        old = self._call(lambda: self.r.zrangebyscore(f"{self.ns}:txt", "-inf",
                                                      now - self.t_horizon))
        if old:
            p = self.r.pipeline(transaction=True)
            p.hdel(f"{self.ns}:tx", *old)
            p.hdel(f"{self.ns}:label", *old)
            p.zrem(f"{self.ns}:txt", *old)
            self._call(p.execute)

    def label(self, transaction_id: int, fraud: bool) -> bool:
        raw = self._call(lambda: self.r.hget(f"{self.ns}:tx", transaction_id))
        if raw is None:
            return False
        _, terminal, seconds, _ = raw.decode().split(":")
        key = f"{self.ns}:f:{terminal}"
        p = self.r.pipeline(transaction=True)  # the label and the fraud set move together
        if fraud:
            p.zadd(key, {str(transaction_id): int(seconds)})
        else:
            p.zrem(key, str(transaction_id))
        p.hset(f"{self.ns}:label", transaction_id, int(fraud))
        self._call(p.execute)
        return True

    def clear(self) -> None:
        keys = self._call(lambda: list(self.r.scan_iter(f"{self.ns}:*", count=1000)))
        for i in range(0, len(keys), 1000):
            self.r.delete(*keys[i : i + 1000])

    def load(self, snapshot: pd.DataFrame, wait_s: float = 300.0) -> None:
        """Load once per namespace: the first replica loads, the others wait for it."""
        self._call(lambda: self._load(snapshot, wait_s))

    def _load(self, snapshot: pd.DataFrame, wait_s: float) -> None:
        if self.r.get(f"{self.ns}:loaded"):
            return
        if not self.r.set(f"{self.ns}:loading", 1, nx=True, ex=int(wait_s)):
            t_end = time.monotonic() + wait_s
            while not self.r.get(f"{self.ns}:loaded") and time.monotonic() < t_end:
                time.sleep(0.1)
            return
        snap = snapshot.sort_values(["SECONDS", "TRANSACTION_ID"], kind="stable")
        p = self.r.pipeline(transaction=False)
        for n, row in enumerate(snap.itertuples(index=False), 1):
            tx = Tx(int(row.TRANSACTION_ID), int(row.SECONDS), int(row.CUSTOMER_ID),
                    int(row.TERMINAL_ID), int(row.CENTS))
            self._write(p, tx)
            if row.LABEL == 1:
                p.zadd(f"{self.ns}:f:{tx.terminal_id}", {str(tx.transaction_id): tx.seconds})
            if row.LABEL >= 0:
                p.hset(f"{self.ns}:label", tx.transaction_id, int(row.LABEL))
            if n % 500 == 0:  # small round trips: each reply must arrive within the timeout
                p.execute()
        p.set(f"{self.ns}:loaded", 1)
        p.execute()

    def snapshot(self) -> pd.DataFrame:
        txs = self._call(lambda: self.r.hgetall(f"{self.ns}:tx"))
        raw = self._call(lambda: self.r.hgetall(f"{self.ns}:label"))
        labels = {int(k): int(v) for k, v in raw.items()}
        rows = []
        for k, v in txs.items():
            c, t, s, cents = map(int, v.decode().split(":"))
            rows.append([int(k), s, c, t, cents, labels.get(int(k), -1)])
        return pd.DataFrame(rows, columns=SNAPSHOT_COLUMNS).astype(np.int64)


def _outage_errors() -> tuple[type[Exception], ...]:
    """Redis errors that mean "the store cannot serve now", not "this call is wrong":
    unreachable, timed out, still loading its data after a restart, a read-only replica, or
    out of memory. Anything else (a wrong-type key, a bad argument) stays a 500: it is a bug."""
    from redis import exceptions as rx

    return (rx.ConnectionError, rx.TimeoutError, rx.ReadOnlyError, rx.OutOfMemoryError,
            rx.ExecAbortError, rx.MasterDownError, OSError)
