"""What fraud monitoring watches: every model feature, the hour of day, and P(fraud).

One function, `feature_columns`, gives the monitored inputs both at training time (the reference
profile, built on the calibration days: a later period than the training rows, as in production)
and at serving time (`FraudPredictor.monitor_record`, one row), so the two cannot disagree.
`TX_AMOUNT` is the amount itself (a model feature); `TX_HOUR` is added because the model sees
only a night flag, and a shift in when cards are used is worth seeing on its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from common.errors import NotReady
from fraud_detection.features import DAY

__all__ = ["HOUR", "CALENDAR", "TASK", "feature_columns", "record_features", "build_profile",
           "forward_feedback"]

HOUR = "TX_HOUR"
# inputs that follow the clock: a few hours of traffic never match a reference of whole weeks
CALENDAR = (HOUR, "TX_DURING_NIGHT", "TX_DURING_WEEKEND")
TASK = "binary"


def _hour(seconds: np.ndarray) -> np.ndarray:
    return (np.floor_divide(np.asarray(seconds, np.int64) % DAY, 3600)).astype(np.float64)


def feature_columns(x: np.ndarray, names: list[str], seconds: np.ndarray) -> dict[str, np.ndarray]:
    """Feature rows (n, len(names)) and epoch seconds (n,) → {monitored name: column}."""
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or x.shape[1] != len(names):
        raise ValueError(f"expected (n, {len(names)}) feature rows, got {x.shape}")
    cols = {n: x[:, j] for j, n in enumerate(names)}
    cols[HOUR] = _hour(seconds)
    return cols


def record_features(x_row: np.ndarray, names: list[str], seconds: int) -> dict[str, float]:
    """One served transaction's monitored inputs (the same names as `feature_columns`)."""
    cols = feature_columns(np.asarray(x_row)[None, :], names, np.array([seconds]))
    return {k: float(v[0]) for k, v in cols.items()}


def build_profile(x: np.ndarray, names: list[str], seconds: np.ndarray, probs: np.ndarray,
                  metrics: dict[str, float]) -> dict[str, Any]:
    """The bundle's reference profile: quantile bins of every monitored input and of the
    calibrated P(fraud), with the metrics measured on the same rows."""
    from common.monitoring.profile import build_profile as build
    from common.monitoring.profile import numeric_ref

    feats = {k: numeric_ref(v) for k, v in feature_columns(x, names, seconds).items()}
    for k in CALENDAR:  # logged and reported, not tested per window (see drift.monitored)
        if k in feats:
            feats[k]["window"] = False
    return build(feats, task=TASK, score=numeric_ref(np.asarray(probs, np.float64)),
                 metrics=metrics, classes=["legit", "fraud"], score_name="probability")


async def forward_feedback(served: Any, items: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Hand labels to the server's monitoring (`served.feedback`): its accepted/unknown counts,
    or None when this server keeps no prediction log (the labels still reach the store)."""
    try:
        return await served.feedback(items)
    except NotReady:
        return None
