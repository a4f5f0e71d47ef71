"""The Monitor: one per vertical in each server process.

On the serving path it only turns each answered item into a small record
(`Predictor.monitor_record`, cheap by contract) and appends a tuple to the prediction log's
buffer. Everything else runs off that path: the log's flusher thread writes the segment and
hands the rows to `_on_rows`, which fills rolling windows per model version; a full window
(`window` items) gets drift statistics against the version's reference profile and estimated
performance. A second thread joins feedback to the shared log with DuckDB every
`realised_every_s` seconds (sooner after new feedback) for realised performance per version.

A model swap needs nothing special: each row carries the version that answered it, so a new
version gets new windows and its own profile (read from its bundle the first time it is seen).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from common.artifacts import Bundle, default_root
from common.errors import VerticalsError
from common.monitoring.drift import calibrate, window_stats
from common.monitoring.estimate import estimated, realised
from common.monitoring.feedback import FeedbackStore, feedback_glob
from common.monitoring.predlog import PredictionLog, Row, check_writable
from common.monitoring.profile import load_profile
from common.predictor import Predictor
from common.serving.prom import (
    DRIFT_DETECTED,
    DRIFT_STATISTIC,
    DRIFT_THRESHOLD,
    ESTIMATED_PERF,
    LOG_ROWS,
    MON_ENABLED,
    MON_WINDOWS,
    REALISED_PERF,
    REFERENCE_PERF,
)

__all__ = ["Monitor", "MonitorSettings"]
log = logging.getLogger(__name__)
_NO_RECORD = Predictor.monitor_record  # the default: this predictor does not monitor


def _env(name: str, default: str, kind: type = float) -> Any:
    raw = os.environ.get(name, default)
    try:
        value = kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise VerticalsError(f"{name}={raw!r} is not {what}", name) from None
    if value < 0:
        raise VerticalsError(f"{name}={raw!r} must not be negative", name)
    return value


@dataclass
class MonitorSettings:
    """Every default is also an environment variable (see docs/monitoring.md)."""

    log_dir: Path
    enabled: bool = True  # VERTICALS_MONITORING (0: no log, no windows)
    window: int = 500  # VERTICALS_MONITOR_WINDOW: requests per window
    ert: float = 500.0  # VERTICALS_MONITOR_ERT: expected windows between false alarms
    flush_s: float = 1.0  # VERTICALS_LOG_FLUSH_S
    flush_rows: int = 2048
    realised_every_s: float = 30.0  # VERTICALS_MONITOR_REALISED_S
    horizon_days: float = 30.0  # VERTICALS_MONITOR_HORIZON_DAYS: labels joined this far back

    @classmethod
    def from_env(cls, root: str | Path | None = None, log_dir: str | Path | None = None
                 ) -> MonitorSettings:
        """Settings from the environment; the log lives in `log_dir`, else $VERTICALS_LOG_DIR,
        else `<bundle root>/_monitoring`."""
        d = log_dir or os.environ.get("VERTICALS_LOG_DIR") or (
            Path(root) if root is not None else default_root()) / "_monitoring"
        s = cls(Path(d), enabled=os.environ.get("VERTICALS_MONITORING", "1") not in ("0", "false"),
                window=_env("VERTICALS_MONITOR_WINDOW", "500", int),
                ert=_env("VERTICALS_MONITOR_ERT", "500"),
                flush_s=_env("VERTICALS_LOG_FLUSH_S", "1.0"),
                realised_every_s=_env("VERTICALS_MONITOR_REALISED_S", "30"),
                horizon_days=_env("VERTICALS_MONITOR_HORIZON_DAYS", "30"))
        if s.window < 10:
            raise VerticalsError("VERTICALS_MONITOR_WINDOW must be at least 10", "window")
        if s.ert <= 1:
            raise VerticalsError("VERTICALS_MONITOR_ERT must be above 1", "ert")
        return s


@dataclass
class _Version:
    """Windows and results of one model version in this process."""

    bundle: Bundle
    profile: dict[str, Any] | None = None
    reason: str | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    pending: list[pa.Table] = field(default_factory=list)  # the open window's rows
    pending_rows: int = 0
    requests: int = 0
    windows: int = 0
    last_window: dict[str, Any] | None = None
    realised: dict[str, float] = field(default_factory=dict)
    ready: bool = False  # profile loaded and thresholds calibrated


class Monitor:
    """Prediction log, windows, drift, estimated and realised performance of one vertical."""

    def __init__(self, vertical: str, task: str | None, settings: MonitorSettings):
        self.vertical, self.task, self.settings = vertical, task, settings
        check_writable(settings.log_dir)
        self.log = PredictionLog(settings.log_dir, vertical, flush_s=settings.flush_s,
                                 flush_rows=settings.flush_rows, start=False)
        self.log.listeners.append(self._on_rows)
        self.feedback_store = FeedbackStore(self.log)
        self._versions: dict[str, _Version] = {}
        self._lock = threading.Lock()
        self._prep_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._errors = 0

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        if not self.settings.enabled or self._thread is not None:
            return
        self.log.start()
        self._thread = threading.Thread(target=self._run, name=f"monitor-{self.vertical}",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.log.close()

    # ---- the serving path (model thread, or the loop for inline batches) -------------------
    def offer(self, request_ids: list[str | None] | None, predictor: Any, requests: list,
              where: list[int], outputs: list, results: list) -> None:
        """`Predictor.run_each`'s monitor hook, bound to the batch's request ids."""
        if not self.settings.enabled or type(predictor).monitor_record is _NO_RECORD:
            return
        try:
            bundle = predictor.bundle
            version = bundle.version
            if version not in self._versions:
                with self._lock:
                    self._versions.setdefault(version, _Version(bundle))
            record = predictor.monitor_record
            ts = time.time()
            rows: list[Row] = []
            for j, i in enumerate(where):
                r = results[i]
                if isinstance(r, BaseException):  # not answered: nothing to log
                    continue
                rec = record(requests[i], outputs[j], r)
                if rec is None:
                    continue  # not monitored (this predictor, or this kind of request)
                rid = request_ids[i] if request_ids else None
                rows.append((rid or uuid.uuid4().hex, ts, version, rec))
            if rows:
                self.log.append(rows)
        except Exception as e:  # monitoring must never fail an answer
            self._errors += 1
            if self._errors in (1, 10, 100, 1000):
                log.warning("%s: monitor_record failed (%d times): %s", self.vertical,
                            self._errors, e)

    def bind(self, request_ids: list[str | None]):
        """The hook for one batch: `run_each(..., monitor=monitor.bind(ids))`."""
        def hook(predictor, requests, where, outputs, results):
            self.offer(request_ids, predictor, requests, where, outputs, results)
        return hook

    # ---- windows (flusher thread) ---------------------------------------------------------
    def _prepare(self, v: _Version) -> None:
        """Load the version's profile and calibrate its thresholds, once (either thread)."""
        with self._prep_lock:
            if not v.ready:
                self._load(v)
                v.ready = True

    def _load(self, v: _Version) -> None:
        v.profile, v.reason = load_profile(v.bundle)
        version = v.bundle.version
        MON_ENABLED.labels(self.vertical, version).set(0 if v.profile is None else 1)
        if v.profile is None:
            log.warning("%s: monitoring off for %s: %s", self.vertical, version, v.reason)
            return
        t0 = time.perf_counter()
        v.thresholds = calibrate(v.profile, self.settings.window, self.settings.ert)
        log.info("%s: calibrated %d drift thresholds for %s in %.2f s", self.vertical,
                 len(v.thresholds), version, time.perf_counter() - t0)
        for metric, value in (v.profile.get("metrics") or {}).items():
            REFERENCE_PERF.labels(self.vertical, version, metric).set(value)

    def _on_rows(self, table: pa.Table) -> None:
        """A flushed batch (Arrow) into the windows of the versions that answered it."""
        LOG_ROWS.labels(self.vertical).inc(table.num_rows)
        col = table["model_version"]
        for version in pc.unique(col).to_pylist():
            v = self._versions.get(version)
            if v is None:
                continue
            part = table if len(self._versions) == 1 else table.filter(pc.equal(col, version))
            self._prepare(v)
            v.requests += part.num_rows
            if v.profile is None:
                continue
            v.pending.append(part)
            v.pending_rows += part.num_rows
            size = self.settings.window
            if v.pending_rows < size:
                continue
            # feature columns may come and go between batches: missing ones read as nulls
            rest = pa.concat_tables(v.pending, promote_options="permissive")
            while rest.num_rows >= size:
                self._close_window(v, rest.slice(0, size))
                rest = rest.slice(size)
            v.pending, v.pending_rows = [rest], rest.num_rows

    def _task(self, v: _Version) -> str | None:
        return (v.profile or {}).get("task") or self.task

    def _close_window(self, v: _Version, window: pa.Table) -> None:
        profile = v.profile or {}
        cols: dict[str, Any] = {}
        for name, ref in (profile.get("features") or {}).items():
            if f"f_{name}" in window.column_names:
                cols[name] = _values(window[f"f_{name}"], ref["kind"])
        score = _values(window["score"], "numeric")
        if profile.get("score"):
            cols[profile.get("score_name") or "score"] = score
        drift = window_stats(profile, cols, v.thresholds)
        task = self._task(v)
        if task == "binary":
            est = estimated(task, score[np.isfinite(score)],
                            float(profile.get("threshold", 0.5)))
        elif task == "multiclass":
            est = estimated(task, [json.loads(p) for p in window["probs"].to_pylist() if p])
        else:
            est = {}
        detected = any(d["drift"] for d in drift.values())
        summary = {"end": datetime.now(UTC).isoformat(timespec="seconds"), "n": window.num_rows,
                   "drift": drift, "drift_detected": detected, "estimated": est}
        with self._lock:
            was = v.last_window is not None and v.last_window["drift_detected"]
            v.windows += 1
            v.last_window = summary
        version = v.bundle.version
        for name, d in drift.items():
            DRIFT_STATISTIC.labels(self.vertical, version, name).set(d["statistic"])
            DRIFT_THRESHOLD.labels(self.vertical, version, name).set(d["threshold"])
        DRIFT_DETECTED.labels(self.vertical, version).set(int(detected))
        MON_WINDOWS.labels(self.vertical, version).inc()
        for metric, value in est.items():
            ESTIMATED_PERF.labels(self.vertical, version, metric).set(value)
        if detected and not was:  # one line when drift starts, not one per window
            log.warning("%s %s: drift in window %d on %s", self.vertical, version, v.windows,
                        ", ".join(n for n, d in drift.items() if d["drift"]))
        elif was and not detected:
            log.warning("%s %s: no drift in window %d", self.vertical, version, v.windows)

    # ---- realised performance (monitor thread) ----------------------------------------------
    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.settings.realised_every_s)
            if self._stop:
                return
            self._wake.clear()
            try:
                self.refresh_realised()
            except Exception:
                log.exception("%s: realised performance failed", self.vertical)

    def refresh_realised(self) -> dict[str, dict[str, float]]:
        """Join feedback to the shared log (every worker's segments) per model version this
        process serves (or served); every worker computes the same values."""
        fb = self.log.base / "feedback"
        if not self.log.segments() or not fb.is_dir() or not any(fb.glob("*.parquet")):
            return {}
        since = datetime.now(UTC) - timedelta(days=self.settings.horizon_days)
        # only the log's own path is spliced in (quoted by feedback_glob); values are bound
        df = self.log.query(
            "WITH fb AS (SELECT id, arg_max(label, ts) AS label FROM read_parquet("  # nosec B608
            f"{feedback_glob(self.log.base)}) GROUP BY id) "
            "SELECT l.model_version, l.score, l.prediction, l.probs, "
            "coalesce(a.label, b.label) AS label FROM log l "
            "LEFT JOIN fb a ON a.id = l.request_id LEFT JOIN fb b ON b.id = l.id "
            "WHERE (a.label IS NOT NULL OR b.label IS NOT NULL) AND l.ts >= ? "
            "AND l.date >= ?", [since, since.date()])  # the date prunes whole partitions
        out: dict[str, dict[str, float]] = {}
        for version, part in df.groupby("model_version"):
            v = self._versions.get(str(version))
            if v is None:  # served by other workers only: they report it, with its profile
                continue
            self._prepare(v)
            profile = v.profile
            task = (profile or {}).get("task") or self.task
            if task is None:
                continue
            metrics = realised(task, part, classes=(profile or {}).get("classes"),
                               threshold=float((profile or {}).get("threshold", 0.5)))
            out[str(version)] = metrics
            for metric, value in metrics.items():
                if metric != "n_labels":
                    REALISED_PERF.labels(self.vertical, str(version), metric).set(value)
            with self._lock:
                v.realised = metrics
        return out

    # ---- feedback and JSON ----------------------------------------------------------------
    def record_feedback(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Store labels (see FeedbackStore.record); realised performance follows shortly."""
        result = self.feedback_store.record(self.vertical, items)
        self._wake.set()
        return result

    def snapshot(self, current: Any = None) -> dict[str, Any]:
        """The JSON of `GET /v1/monitoring/{vertical}` for this process; `current` is the
        predictor serving now (None while not loaded)."""
        enabled, reason = self.settings.enabled, None
        if not enabled:
            reason = "monitoring is off (VERTICALS_MONITORING=0)"
        elif current is None:
            enabled, reason = False, f"{self.vertical} model is not loaded"
        else:
            if type(current).monitor_record is _NO_RECORD:
                enabled, reason = False, f"{self.vertical} predictor has no monitor_record"
            else:
                v = self._versions.get(current.bundle.version)
                if v is not None and v.ready:
                    enabled, reason = v.profile is not None, v.reason
                else:
                    profile, why = load_profile(current.bundle)
                    enabled, reason = profile is not None, why
        versions = {}
        with self._lock:
            for name, v in self._versions.items():
                versions[name] = {
                    "requests": v.requests, "windows": v.windows,
                    "monitored": v.profile is not None if v.ready else None,
                    "reason": v.reason, "last_window": v.last_window,
                    "realised": dict(v.realised),
                    "reference": dict((v.profile or {}).get("metrics") or {}),
                }
        return {"vertical": self.vertical, "process": os.getpid(), "enabled": enabled,
                "reason": reason, "window_size": self.settings.window, "ert": self.settings.ert,
                "versions": versions,
                "log": {"dir": str(self.log.base), "rows": self.log.rows_written},
                "feedback": {"accepted": self.feedback_store.accepted,
                             "unknown": self.feedback_store.unknown}}


def _values(column: pa.ChunkedArray, kind: str) -> Any:
    """A window's column as the drift statistics take it: float array (NaN for null),
    list of str, or an (n, d) matrix of the non-null embeddings."""
    if kind == "numeric":
        if not pa.types.is_floating(column.type) and not pa.types.is_integer(column.type):
            return np.full(len(column), np.nan)
        return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    if kind == "categorical":
        return column.to_pylist()
    rows = [r for r in column.to_pylist() if r is not None]
    return np.asarray(rows, dtype=np.float64) if rows else []
