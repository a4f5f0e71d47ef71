"""FraudPredictor: one transaction (or a list, in order) → probability, decision, reasons.

    p = FraudPredictor.load("latest", root="artifacts")                  # in-process store
    p = FraudPredictor.load("latest", store="redis", redis_url="redis://127.0.0.1:6379/0")
    p.predict([{"transaction_id": 1, "timestamp": "2018-08-08T10:00:00", "customer_id": 7,
                "terminal_id": 42, "amount": 57.3}])
    p.apply_labels([(1, True)])                                          # late labels

Scoring records the transaction in the feature store (so the next transaction of the card sees
it); `predict_batch` walks the items in order, so a batch answers exactly as the same
transactions sent one by one. The store starts from the bundle's snapshot.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import torch

from common.errors import InvalidInput
from common.predictor import Predictor
from fraud_detection.decision import DecisionPolicy
from fraud_detection.explain import BundleScorer, top_reasons
from fraud_detection.features import derive, stack_aggregates, to_cents
from fraud_detection.monitoring import record_features
from fraud_detection.schemas import Score, Transaction
from fraud_detection.store import FeatureStore, MemoryStore, RedisStore, Tx

__all__ = ["FraudPredictor"]
log = logging.getLogger(__name__)
_EPOCH_MIN, _EPOCH_MAX = 0, 253_402_300_799  # 1970 .. 9999-12-31


class FraudPredictor(Predictor):
    vertical = "fraud"
    request_model = Transaction
    response_model = Score
    max_batch_size = 64
    max_wait_ms = 1.0  # up to 1 ms to batch: amortises the per-call XGBoost cost when CPU is short
    batch_job_size = 512

    def setup(self, device: torch.device) -> None:
        cfg = self.bundle.read_json("fraud_config.json")
        self.features: list[str] = cfg["features"]
        self.delay_days = int(cfg["delay_days"])
        self.policy = DecisionPolicy(**cfg["policy"])
        # XGBoost alone, or XGBoost + feed-forward net blended in calibrated-logit space
        self.scorer = BundleScorer(self.bundle, nthread=int(self.options.get("nthread", 1)))
        self.n_reasons = int(self.options.get("n_reasons", 3))
        self.store = self._make_store()
        self.store.load(pd.read_parquet(self.bundle.file("store_snapshot.parquet")))

    def _make_store(self) -> FeatureStore:
        kind = self.options.get("store") or os.environ.get("VERTICALS_FRAUD_STORE", "memory")
        if kind == "memory":
            return MemoryStore(self.delay_days)
        if kind == "redis":
            url = self.options.get("redis_url") or os.environ.get(
                "VERTICALS_FRAUD_REDIS_URL", "redis://127.0.0.1:6379/0"
            )
            ns = self.options.get("redis_namespace") or self.bundle.version
            timeout = self.options.get("redis_timeout_s") or os.environ.get(
                "VERTICALS_FRAUD_REDIS_TIMEOUT_S", 0.3
            )
            return RedisStore(url, ns, self.delay_days, timeout_s=float(timeout))
        raise InvalidInput("store", f"unknown feature store {kind!r} (memory or redis)")

    def health(self) -> bool:
        """Ready only while the feature store answers (a cached PING for Redis): a replica
        that cannot record transactions must leave the load balancer, not answer 503s."""
        return self.ready and self.store.available()

    @property
    def health_reason(self) -> str | None:
        """Why `health()` is false, for /readyz (names the store)."""
        if not self.ready:
            return "predictor is not set up"
        return self.store.unavailable_reason()

    def decode(self, request: Transaction) -> Tx:
        ts = request.timestamp
        if ts.tzinfo is not None:  # store naive UTC: the same clock as the training data
            ts = ts.astimezone(UTC).replace(tzinfo=None)
        td = ts - datetime(1970, 1, 1)
        seconds = td.days * 86_400 + td.seconds  # floor to whole seconds, as in batch
        if not _EPOCH_MIN <= seconds <= _EPOCH_MAX:
            raise InvalidInput("timestamp", "must be between 1970 and 9999")
        return Tx(request.transaction_id, seconds, request.customer_id, request.terminal_id,
                  int(to_cents(request.amount)))

    def features_of(self, items: list[Tx]) -> np.ndarray:
        """Features of items in order, recording each in the store (the online path)."""
        aggs = stack_aggregates([self.store.observe(tx) for tx in items])
        amount = np.array([tx.cents for tx in items], np.int64) / 100.0
        seconds = np.array([tx.seconds for tx in items], np.int64)
        return derive(amount, seconds, aggs, names=self.features)

    def predict_batch(self, items: list[Tx]) -> list[dict[str, Any]]:
        if not items:
            return []
        return self.predict_prepared(self.prepare(items))

    # ---- lifecycle (common/serving/follow.py, rollout.py) --------------------------------
    routing_field = "customer_id"  # canary: one card holder always sees the same model
    stateful = True  # scoring records the transaction: a shadow must not score it again

    def prepare(self, items: list[Tx]) -> tuple[np.ndarray, list[int]]:
        """The stateful half: features, recording each transaction in the store."""
        return self.features_of(items), [tx.transaction_id for tx in items]

    def predict_prepared(self, prepared: tuple[np.ndarray, list[int]]) -> list[dict[str, Any]]:
        if not len(prepared[1]):
            return []
        out = self.answer(*prepared)
        for o, row in zip(out, prepared[0], strict=True):
            o["_x"] = row  # the feature row, for monitor_record (encode drops it)
        return out

    def monitor_record(self, request: Transaction, output: dict[str, Any],
                       response: Score) -> dict[str, Any]:
        """The monitored inputs (fraud_detection.monitoring), P(fraud) and the decision."""
        feats = record_features(output["_x"], self.features, self.decode(request).seconds)
        return {"id": str(request.transaction_id), "features": feats,
                "score": response.probability, "probs": None, "prediction": response.decision}

    def select_prepared(self, prepared, idx: list[int]) -> tuple[np.ndarray, list[int]]:
        x, ids = prepared
        return x[idx], [ids[i] for i in idx]

    def shadow_answer(self, requests, prepared, primary) -> list[Score]:
        """A candidate scores the features production computed and recorded (never records
        again); without reason codes, which the comparison does not use and which cost most
        of the model time (integrated gradients)."""
        if getattr(primary, "features", None) != self.features:
            raise InvalidInput("candidate", "its features differ from production's: the "
                               "shadow cannot reuse production's feature rows")
        x, ids = prepared
        probs, _ = self.scorer.score(x, explain=False)
        return [Score(transaction_id=int(i), probability=float(p), decision=d, reasons=[],
                      model_version=self.bundle.version)
                for i, p, d in zip(ids, probs, self.policy.decide(probs), strict=True)]

    def warmup(self, examples=None) -> None:
        """The model (trees, net, reasons) on one all-zero feature row: no store involved."""
        self.answer(np.zeros((1, len(self.features))), [0])

    def adopt_state(self, old: Predictor) -> None:
        """Keep serving from the live feature store (histories and labels recorded since the
        server started), not from this bundle's training snapshot. Both bundles must use the
        same label delay, or their windows would not mean the same thing."""
        if isinstance(old, FraudPredictor) and old.delay_days == self.delay_days:
            self.store = old.store
        elif isinstance(old, FraudPredictor):
            log.warning("fraud: bundle %s has a %d-day label delay, the served one %d: it "
                        "starts from its own snapshot", self.bundle.version, self.delay_days,
                        old.delay_days)

    def answer(self, x: np.ndarray, ids: list[int]) -> list[dict[str, Any]]:
        """The stateless half of scoring: feature rows (from the store online, or computed once
        per batch job by fraud_detection.batch_features) → one answer per row."""
        probs, contribs = self.scorer.score(x)  # whole batch at once, no per-row model calls
        decisions = self.policy.decide(probs)
        reasons = top_reasons(contribs, x, self.features, self.n_reasons)
        return [
            {"transaction_id": int(i), "probability": float(p), "decision": d,
             "reasons": r, "model_version": self.bundle.version}
            for i, p, d, r in zip(ids, probs, decisions, reasons, strict=True)
        ]

    def run_ordered(self, requests: list[Transaction]) -> list[Score]:
        """`run` for a list request: a bad item fails the whole list (nothing is recorded) and
        the error names its position, e.g. transactions.3.timestamp."""
        from common.errors import VerticalsError

        for i, r in enumerate(requests):
            try:
                self.decode(r)
            except VerticalsError as e:
                reason = getattr(e, "reason", e.message)
                raise InvalidInput(f"transactions.{i}.{e.field}", reason) from None
        return self.run(requests)

    def apply_labels(self, labels: list[tuple[int, bool]]) -> tuple[int, list[int]]:
        """Late labels: (transaction_id, fraud) pairs → (updated count, unknown ids)."""
        unknown = [tid for tid, fraud in labels if not self.store.label(tid, fraud)]
        return len(labels) - len(unknown), unknown
