"""Labels after the fact. Each `record` call appends one Parquet segment of
(id, label as JSON text, ts, kind) under `DIR/<vertical>/feedback/`; kind is `known` when the
id is a logged request id or business id, else `unknown` (kept all the same: the prediction may
sit in another worker's open batch and join later). Unknown ids are counted and reported, never
an error for the batch."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, Field

from common.monitoring.predlog import PredictionLog, segment_prefix, sql_literal, write_segment
from common.serving.prom import FEEDBACK

__all__ = ["FeedbackStore", "FeedbackResult", "UNKNOWN_SHOWN", "feedback_glob", "class_labels"]
UNKNOWN_SHOWN = 20  # unknown ids echoed back per call


class FeedbackResult(BaseModel):
    """The answer of every feedback route."""

    accepted: int = Field(description="labels stored for ids found in the prediction log")
    unknown: int = Field(description="labels whose id is neither a logged request id nor a "
                                     "logged business id (stored, counted, not an error)")
    unknown_ids: list[str] = Field(description=f"the first {UNKNOWN_SHOWN} unknown ids")


def class_labels(feedback: list[Any], classes: list[str]) -> list[dict[str, Any]]:
    """Feedback items (`.id`, `.label`) of a classifier → `{"id", "label"}` dicts, after checking
    every label is one of `classes` (InvalidInput naming `feedback.N.label` otherwise)."""
    from common.errors import InvalidInput

    for i, item in enumerate(feedback):
        if item.label not in classes:
            raise InvalidInput(f"feedback.{i}.label",
                               f"not a class of this model ({', '.join(classes)})")
    return [{"id": item.id, "label": item.label} for item in feedback]


def feedback_glob(base: Path) -> str:
    """The feedback segments as an SQL string literal, for `read_parquet(...)`."""
    return sql_literal(str(base / "feedback" / "*.parquet"))


class FeedbackStore:
    """Feedback segments of one vertical, next to its prediction log."""

    def __init__(self, log: PredictionLog):
        self.log = log
        self.dir = log.base / "feedback"
        self._prefix = segment_prefix()
        self._seq = 0
        self._lock = threading.Lock()
        self._m = {o: FEEDBACK.labels(log.vertical, o) for o in ("accepted", "unknown")}
        self.accepted = self.unknown = 0

    def _known_in_log(self, keys: list[str]) -> set[str]:
        """The keys found in the flushed log (every process) as a request id or business id."""
        if not keys or not self.log.segments():
            return set()
        # two hash semi-joins: an OR in one join condition would compare every pair
        df = self.log.query(
            "WITH keys AS (SELECT DISTINCT unnest(?::VARCHAR[]) AS k) "
            "SELECT k FROM keys SEMI JOIN log ON keys.k = log.request_id "
            "UNION SELECT k FROM keys SEMI JOIN log ON keys.k = log.id", [keys])
        return set(df["k"])

    def record(self, vertical: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Store labels `[{"id": str, "label": Any}]`; {"accepted", "unknown", "unknown_ids"}."""
        if vertical != self.log.vertical:
            raise ValueError(f"feedback for {vertical!r} sent to the {self.log.vertical} store")
        keys = [str(it["id"]) for it in items]
        known = self.log.recent(keys)
        known |= self._known_in_log([k for k in dict.fromkeys(keys) if k not in known])
        now = int(time.time() * 1e6)
        kind_col = ["known" if k in known else "unknown" for k in keys]
        table = pa.table({
            "id": pa.array(keys, pa.string()),
            "label": pa.array([json.dumps(it["label"]) for it in items], pa.string()),
            "ts": pa.array([now] * len(keys), pa.timestamp("us", tz="UTC")),
            "kind": pa.array(kind_col, pa.string()),
        })
        if keys:
            with self._lock:
                self._seq += 1
                seq = self._seq
            write_segment(table, self.dir, f"{self._prefix}-{seq:06d}.parquet")
        unknown = [k for k, c in zip(keys, kind_col, strict=True) if c == "unknown"]
        n_ok = len(keys) - len(unknown)
        self.accepted += n_ok
        self.unknown += len(unknown)
        if n_ok:
            self._m["accepted"].inc(n_ok)
        if unknown:
            self._m["unknown"].inc(len(unknown))
        return {"accepted": n_ok, "unknown": len(unknown),
                "unknown_ids": unknown[:UNKNOWN_SHOWN]}
