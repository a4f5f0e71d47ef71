"""The feature definitions, computed in batch (vectorised numpy) and online (fraud_detection.store).

One definition serves both: window aggregates (counts, integer cent sums, fraud counts) are
computed by `batch_aggregates` over millions of rows or by a `FeatureStore` for one transaction,
and `derive` turns those aggregates into the feature matrix with the very same float operations,
so online features equal batch features bit for bit.

Definitions (Fraud Detection Handbook, ch. 3), for a transaction i at time t (whole seconds):
- TX_AMOUNT; TX_DURING_WEEKEND (Sat/Sun); TX_DURING_NIGHT (hour <= 6);
- customer windows w in 1/7/30 days: the customer's transactions in (t - w, t] that come no
  later than i in (time, transaction id) order, i included: count and mean amount;
- terminal windows: transactions of the terminal in (t - d - w, t - d] with d the label delay
  (7 days): count, and fraud ratio (frauds / count, 0 when empty);
- extras (ours): amount over the customer's 7/30-day mean amount, the customer's 1-day mean over
  its 30-day mean, the terminal's fraud count in the delayed 7/30-day windows, and the frauds
  among the terminal's last 3 known transactions of its delayed 30-day window (a compromised
  terminal stays compromised for weeks, so its latest known labels matter most).
Amounts are taken in whole cents (sums are integers) so that batch and online agree exactly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "WINDOWS",
    "DAY",
    "HANDBOOK_FEATURES",
    "EXTRA_FEATURES",
    "ALL_FEATURES",
    "to_seconds",
    "to_cents",
    "derive",
    "batch_aggregates",
    "compute_features",
]

DAY = 86_400
WINDOWS = (1, 7, 30)
HANDBOOK_FEATURES = [
    "TX_AMOUNT",
    "TX_DURING_WEEKEND",
    "TX_DURING_NIGHT",
    *[f"CUSTOMER_ID_{k}_{w}DAY_WINDOW" for w in WINDOWS for k in ("NB_TX", "AVG_AMOUNT")],
    *[f"TERMINAL_ID_{k}_{w}DAY_WINDOW" for w in WINDOWS for k in ("NB_TX", "RISK")],
]
EXTRA_FEATURES = [
    "AMOUNT_OVER_CUSTOMER_AVG_7DAY",
    "AMOUNT_OVER_CUSTOMER_AVG_30DAY",
    "CUSTOMER_AVG_1DAY_OVER_30DAY",
    "TERMINAL_ID_NB_FRAUD_7DAY_WINDOW",
    "TERMINAL_ID_NB_FRAUD_30DAY_WINDOW",
    "TERMINAL_ID_FRAUDS_LAST3_KNOWN",
]
LAST_K = 3
ALL_FEATURES = HANDBOOK_FEATURES + EXTRA_FEATURES


def to_seconds(ts) -> np.ndarray:
    """Naive datetimes (or datetime64 arrays) → int64 epoch seconds (floored)."""
    arr = np.asarray(pd.to_datetime(ts), dtype="datetime64[ns]").astype(np.int64)
    return np.floor_divide(arr, 1_000_000_000)


def to_cents(amount) -> np.ndarray:
    return np.rint(np.asarray(amount, dtype=np.float64) * 100).astype(np.int64)


def _ratio(num, den):
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def derive(
    amount: np.ndarray,
    seconds: np.ndarray,
    c_n: np.ndarray,
    c_cents: np.ndarray,
    t_n: np.ndarray,
    t_f: np.ndarray,
    t_last: np.ndarray,
    names: list[str] | None = None,
) -> np.ndarray:
    """Aggregates → feature matrix (n, len(names)).

    amount (n,), seconds (n,), c_n/c_cents (n, 3): customer count and cent sum per window,
    t_n/t_f (n, 3): terminal count and fraud count per delayed window, t_last (n,): frauds among
    the last LAST_K known transactions of the terminal.
    """
    amount = np.asarray(amount, dtype=np.float64)
    seconds = np.asarray(seconds, dtype=np.int64)
    weekday = (np.floor_divide(seconds, DAY) + 3) % 7  # 1970-01-01 was a Thursday
    hour = np.floor_divide(seconds % DAY, 3600)
    c_avg = _ratio(c_cents, c_n) / 100.0
    risk = _ratio(t_f, t_n)
    cols = {
        "TX_AMOUNT": amount,
        "TX_DURING_WEEKEND": (weekday >= 5).astype(np.float64),
        "TX_DURING_NIGHT": (hour <= 6).astype(np.float64),
        "AMOUNT_OVER_CUSTOMER_AVG_7DAY": _ratio(amount, c_avg[:, 1]),
        "AMOUNT_OVER_CUSTOMER_AVG_30DAY": _ratio(amount, c_avg[:, 2]),
        "CUSTOMER_AVG_1DAY_OVER_30DAY": _ratio(c_avg[:, 0], c_avg[:, 2]),
        "TERMINAL_ID_NB_FRAUD_7DAY_WINDOW": np.asarray(t_f[:, 1], dtype=np.float64),
        "TERMINAL_ID_NB_FRAUD_30DAY_WINDOW": np.asarray(t_f[:, 2], dtype=np.float64),
        "TERMINAL_ID_FRAUDS_LAST3_KNOWN": np.asarray(t_last, dtype=np.float64),
    }
    for j, w in enumerate(WINDOWS):
        cols[f"CUSTOMER_ID_NB_TX_{w}DAY_WINDOW"] = np.asarray(c_n[:, j], dtype=np.float64)
        cols[f"CUSTOMER_ID_AVG_AMOUNT_{w}DAY_WINDOW"] = c_avg[:, j]
        cols[f"TERMINAL_ID_NB_TX_{w}DAY_WINDOW"] = np.asarray(t_n[:, j], dtype=np.float64)
        cols[f"TERMINAL_ID_RISK_{w}DAY_WINDOW"] = risk[:, j]
    return np.stack([cols[n] for n in names or ALL_FEATURES], axis=1)


def _group_keys(group: np.ndarray, seconds: np.ndarray, margin: int):
    """Order rows by (group, position) and build one sortable int64 key per row so windows of
    every group are found by a single searchsorted (no loop per group or row)."""
    order = np.lexsort((np.arange(len(group)), group))
    _, grank = np.unique(group[order], return_inverse=True)
    t = seconds[order] - seconds.min() + margin
    span = int(t.max()) + margin + 1
    if (grank.max(initial=0) + 1) * span >= np.iinfo(np.int64).max:
        raise ValueError("too many groups times too long a period for int64 keys")
    return order, grank.astype(np.int64) * span + t


def batch_aggregates(
    customer: np.ndarray,
    terminal: np.ndarray,
    seconds: np.ndarray,
    cents: np.ndarray,
    fraud: np.ndarray | None,
    delay_days: int = 7,
):
    """Window aggregates for rows sorted by (time, id): (c_n, c_cents, t_n, t_f, t_last)."""
    n = len(seconds)
    d = delay_days * DAY
    margin = (max(WINDOWS) + delay_days + 1) * DAY
    c_n = np.zeros((n, 3), np.int64)
    c_cents = np.zeros((n, 3), np.int64)
    t_n = np.zeros((n, 3), np.int64)
    t_f = np.zeros((n, 3), np.int64)
    t_last = np.zeros(n, np.int64)
    if n == 0:
        return c_n, c_cents, t_n, t_f, t_last

    order, key = _group_keys(np.asarray(customer), seconds, margin)
    pos = np.arange(n)
    csum = np.concatenate([[0], np.cumsum(cents[order])])
    for j, w in enumerate(WINDOWS):
        left = np.searchsorted(key, key - w * DAY, side="right")  # first row with t_j > t - w
        c_n[order, j] = pos + 1 - left
        c_cents[order, j] = csum[pos + 1] - csum[left]

    order, key = _group_keys(np.asarray(terminal), seconds, margin)
    labels = np.zeros(n, np.int64) if fraud is None else np.asarray(fraud, np.int64)[order]
    fsum = np.concatenate([[0], np.cumsum(labels)])
    hi = np.searchsorted(key, key - d, side="right")  # rows with t_j <= t - d end here
    for j, w in enumerate(WINDOWS):
        lo = np.searchsorted(key, key - d - w * DAY, side="right")
        t_n[order, j] = hi - lo
        t_f[order, j] = fsum[hi] - fsum[lo]
    start = np.maximum(hi - LAST_K, lo)  # lo is the 30-day window's start here
    t_last[order] = fsum[hi] - fsum[start]
    return c_n, c_cents, t_n, t_f, t_last


def compute_features(
    df: pd.DataFrame, delay_days: int = 7, names: list[str] | None = None
) -> pd.DataFrame:
    """Batch features for a validated transaction frame (sorted by time, id); the labels
    (TX_FRAUD, if present) feed the delayed terminal windows."""
    seconds = to_seconds(df["TX_DATETIME"])
    cents = to_cents(df["TX_AMOUNT"])
    aggs = batch_aggregates(
        df["CUSTOMER_ID"].to_numpy(),
        df["TERMINAL_ID"].to_numpy(),
        seconds,
        cents,
        df["TX_FRAUD"].to_numpy() if "TX_FRAUD" in df else None,
        delay_days,
    )
    names = names or ALL_FEATURES
    x = derive(cents / 100.0, seconds, *aggs, names=names)  # amounts in whole cents, as online
    return pd.DataFrame(x, columns=names, index=df.index)
