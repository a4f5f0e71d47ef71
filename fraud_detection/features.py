"""The feature definitions, computed in batch (vectorised numpy) and online (fraud_detection.store).

One definition serves both: window aggregates (counts, integer cent sums, fraud counts, day ages)
are computed by `batch_aggregates` over millions of rows or by a `FeatureStore` for one
transaction, and `derive` turns those `Aggregates` into the feature matrix with the very same
float operations, so online features equal batch features bit for bit.

Definitions (Fraud Detection Handbook, ch. 3), for a transaction i at time t (whole seconds):
- TX_AMOUNT; TX_DURING_WEEKEND (Sat/Sun); TX_DURING_NIGHT (hour <= 6);
- customer windows w in 1/7/30 days: the customer's transactions in (t - w, t] that come no
  later than i in (time, transaction id) order, i included: count and mean amount;
- terminal windows: transactions of the terminal in (t - d - w, t - d] with d the label delay
  (7 days): count, and fraud ratio (frauds / count, 0 when empty);
- extras (ours): amount over the customer's 7/30-day mean amount, the customer's 1-day mean over
  its 30-day mean, the terminal's fraud count in the delayed 7/30-day windows, and the frauds
  among the terminal's last 3 known transactions of its delayed 30-day window (a compromised
  terminal stays compromised for weeks, so its latest known labels matter most);
- history (ours), all over the terminal's delayed 30-day window of KNOWN labels (ages are in
  calendar days, -1 when there is no such transaction): days since its first known fraud and
  since its last known legitimate transaction, the number of distinct days with a known fraud,
  the run of frauds at the end of its known history, and the mean amount of its known frauds.
  Window counts cannot tell a compromise still running from one that ended; ages can (a
  terminal first seen defrauded 10 days ago, all known transactions since fraudulent, is most
  likely still compromised; one first defrauded 35 days ago most likely no longer). On the card
  side: the amount over the largest of the card's earlier amounts in 30 days (0 when none), and
  how many of its earlier transactions in 14 days exceeded 3x its 30-day mean amount (a stolen
  card shows a run of inflated amounts, which dilutes the mean but not this count).
Amounts are taken in whole cents (sums are integers) so that batch and online agree exactly.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

__all__ = [
    "WINDOWS",
    "DAY",
    "LARGE_DAYS",
    "LARGE_FACTOR",
    "HANDBOOK_FEATURES",
    "EXTRA_FEATURES",
    "HISTORY_FEATURES",
    "ALL_FEATURES",
    "Aggregates",
    "stack_aggregates",
    "to_seconds",
    "to_cents",
    "derive",
    "batch_aggregates",
    "compute_features",
    "known_fraud_counts",
]

DAY = 86_400
WINDOWS = (1, 7, 30)
LARGE_DAYS, LARGE_FACTOR = 14, 3  # "large": above 3x the card's 30-day mean, counted over 14 days
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
HISTORY_FEATURES = [
    "TERMINAL_ID_DAYS_SINCE_FIRST_KNOWN_FRAUD",
    "TERMINAL_ID_DAYS_SINCE_LAST_KNOWN_LEGIT",
    "TERMINAL_ID_NB_KNOWN_FRAUD_DAYS",
    "TERMINAL_ID_TRAILING_KNOWN_FRAUDS",
    "TERMINAL_ID_AVG_KNOWN_FRAUD_AMOUNT",
    "AMOUNT_OVER_CUSTOMER_MAX_30DAY",
    "CUSTOMER_ID_NB_LARGE_14DAY",
]
LAST_K = 3
ALL_FEATURES = HANDBOOK_FEATURES + EXTRA_FEATURES + HISTORY_FEATURES


class Aggregates(NamedTuple):
    """Window aggregates of n transactions (arrays), or of one (ints / lists of 3 ints).

    c_n, c_cents (n, 3): the card's count and cent sum per window, the transaction included;
    c_max (n,): largest cents of the card's earlier transactions in 30 days (-1: none);
    c_large (n,): the card's earlier transactions in 14 days above LARGE_FACTOR x its 30-day
    mean (compared in integers: cents * count > factor * cent sum);
    t_n, t_f (n, 3): the terminal's count and fraud count per delayed window;
    t_last (n,): frauds among its last LAST_K known transactions (delayed 30-day window);
    t_first_age, t_legit_age (n,): calendar days since its first known fraud / last known
    legitimate transaction in that window (-1: none); t_fraud_days (n,): distinct days with a
    known fraud; t_trail (n,): known frauds after its last known legitimate transaction;
    t_fraud_cents (n,): cent sum of its known frauds.
    """

    c_n: np.ndarray
    c_cents: np.ndarray
    c_max: np.ndarray
    c_large: np.ndarray
    t_n: np.ndarray
    t_f: np.ndarray
    t_last: np.ndarray
    t_first_age: np.ndarray
    t_legit_age: np.ndarray
    t_fraud_days: np.ndarray
    t_trail: np.ndarray
    t_fraud_cents: np.ndarray


_PER_WINDOW = ("c_n", "c_cents", "t_n", "t_f")  # (n, len(WINDOWS)); the other fields are (n,)


def stack_aggregates(rows: list[Aggregates]) -> Aggregates:
    """Per-transaction aggregates (the online path) → one Aggregates of int64 arrays."""
    return Aggregates(*(
        np.array([r[k] for r in rows], np.int64).reshape(len(rows), len(WINDOWS))
        if f in _PER_WINDOW else np.array([r[k] for r in rows], np.int64).reshape(len(rows))
        for k, f in enumerate(Aggregates._fields)))


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
    amount: np.ndarray, seconds: np.ndarray, aggs: Aggregates, names: list[str] | None = None
) -> np.ndarray:
    """Aggregates → feature matrix (n, len(names)); amount (n,) and seconds (n,) per row."""
    amount = np.asarray(amount, dtype=np.float64)
    seconds = np.asarray(seconds, dtype=np.int64)
    a = aggs
    weekday = (np.floor_divide(seconds, DAY) + 3) % 7  # 1970-01-01 was a Thursday
    hour = np.floor_divide(seconds % DAY, 3600)
    c_avg = _ratio(a.c_cents, a.c_n) / 100.0
    risk = _ratio(a.t_f, a.t_n)

    def f64(v) -> np.ndarray:
        return np.asarray(v, dtype=np.float64)

    cols = {
        "TX_AMOUNT": amount,
        "TX_DURING_WEEKEND": (weekday >= 5).astype(np.float64),
        "TX_DURING_NIGHT": (hour <= 6).astype(np.float64),
        "AMOUNT_OVER_CUSTOMER_AVG_7DAY": _ratio(amount, c_avg[:, 1]),
        "AMOUNT_OVER_CUSTOMER_AVG_30DAY": _ratio(amount, c_avg[:, 2]),
        "CUSTOMER_AVG_1DAY_OVER_30DAY": _ratio(c_avg[:, 0], c_avg[:, 2]),
        "TERMINAL_ID_NB_FRAUD_7DAY_WINDOW": f64(a.t_f[:, 1]),
        "TERMINAL_ID_NB_FRAUD_30DAY_WINDOW": f64(a.t_f[:, 2]),
        "TERMINAL_ID_FRAUDS_LAST3_KNOWN": f64(a.t_last),
        "TERMINAL_ID_DAYS_SINCE_FIRST_KNOWN_FRAUD": f64(a.t_first_age),
        "TERMINAL_ID_DAYS_SINCE_LAST_KNOWN_LEGIT": f64(a.t_legit_age),
        "TERMINAL_ID_NB_KNOWN_FRAUD_DAYS": f64(a.t_fraud_days),
        "TERMINAL_ID_TRAILING_KNOWN_FRAUDS": f64(a.t_trail),
        "TERMINAL_ID_AVG_KNOWN_FRAUD_AMOUNT": _ratio(a.t_fraud_cents, a.t_f[:, 2]) / 100.0,
        "AMOUNT_OVER_CUSTOMER_MAX_30DAY": _ratio(amount, f64(a.c_max) / 100.0),
        "CUSTOMER_ID_NB_LARGE_14DAY": f64(a.c_large),
    }
    for j, w in enumerate(WINDOWS):
        cols[f"CUSTOMER_ID_NB_TX_{w}DAY_WINDOW"] = f64(a.c_n[:, j])
        cols[f"CUSTOMER_ID_AVG_AMOUNT_{w}DAY_WINDOW"] = c_avg[:, j]
        cols[f"TERMINAL_ID_NB_TX_{w}DAY_WINDOW"] = f64(a.t_n[:, j])
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


def _earlier_rows(length: np.ndarray, max_cells: int = 1 << 22):
    """Blocks (rows, offsets (r, K), valid (r, K)) listing, for each row p of a group-sorted
    array, the rows p-1 .. p-length[p] (its earlier rows in a window). Rows are bucketed by the
    next power of two of their length, so the work is about the sum of the lengths however
    skewed they are (a few busy cards do not make every row pay for their window)."""
    bucket = np.ceil(np.log2(np.maximum(length, 1))).astype(np.int64)
    for b in np.unique(bucket[length > 0]):
        k = 1 << int(b)
        rows = np.flatnonzero((bucket == b) & (length > 0))
        step = max(1, max_cells // k)
        for s in range(0, len(rows), step):
            r = rows[s : s + step]
            off = r[:, None] - 1 - np.arange(k)[None, :]
            yield r, off, np.arange(k)[None, :] < length[r][:, None]


def _customer_history(cents_s, left30, left_large, c_n30, c_cents30):
    """c_max and c_large (see Aggregates) for group-sorted rows, vectorised per block."""
    n = len(cents_s)
    pos = np.arange(n)
    c_max = np.full(n, -1, np.int64)
    c_large = np.zeros(n, np.int64)
    for r, off, valid in _earlier_rows(pos - left30):
        vals = cents_s[np.clip(off, 0, None)]
        c_max[r] = np.where(valid, vals, -1).max(1)
        big = vals * c_n30[r][:, None] > LARGE_FACTOR * c_cents30[r][:, None]
        recent = off >= left_large[r][:, None]
        c_large[r] = (big & recent & valid).sum(1)
    return c_max, c_large


def batch_aggregates(
    customer: np.ndarray,
    terminal: np.ndarray,
    seconds: np.ndarray,
    cents: np.ndarray,
    fraud: np.ndarray | None,
    delay_days: int = 7,
) -> Aggregates:
    """Window aggregates for rows sorted by (time, id) (see Aggregates)."""
    n = len(seconds)
    d = delay_days * DAY
    margin = (max(WINDOWS) + delay_days + 1) * DAY
    c_n = np.zeros((n, 3), np.int64)
    c_cents = np.zeros((n, 3), np.int64)
    t_n = np.zeros((n, 3), np.int64)
    t_f = np.zeros((n, 3), np.int64)
    per_row = {k: np.zeros(n, np.int64) for k in Aggregates._fields if k not in _PER_WINDOW}
    if n == 0:
        return Aggregates(c_n=c_n, c_cents=c_cents, t_n=t_n, t_f=t_f, **per_row)
    pos = np.arange(n)
    cents = np.asarray(cents, np.int64)

    # ---- customer side: windows over the card's rows up to and including each row
    order, key = _group_keys(np.asarray(customer), seconds, margin)
    cents_s = cents[order]
    csum = np.concatenate([[0], np.cumsum(cents_s)])
    for j, w in enumerate(WINDOWS):
        left = np.searchsorted(key, key - w * DAY, side="right")  # first row with t_j > t - w
        c_n[order, j] = pos + 1 - left
        c_cents[order, j] = csum[pos + 1] - csum[left]
    left_large = np.searchsorted(key, key - LARGE_DAYS * DAY, side="right")
    c_max, c_large = _customer_history(cents_s, left, left_large, c_n[order, 2],
                                       c_cents[order, 2])  # `left` is the 30-day window's
    per_row["c_max"][order], per_row["c_large"][order] = c_max, c_large

    # ---- terminal side: the delayed windows of known labels, rows [lo, hi) in sorted order
    order, key = _group_keys(np.asarray(terminal), seconds, margin)
    labels = np.zeros(n, np.int64) if fraud is None else np.asarray(fraud, np.int64)[order]
    fsum = np.concatenate([[0], np.cumsum(labels)])
    hi = np.searchsorted(key, key - d, side="right")  # rows with t_j <= t - d end here
    for j, w in enumerate(WINDOWS):
        lo = np.searchsorted(key, key - d - w * DAY, side="right")
        t_n[order, j] = hi - lo
        t_f[order, j] = fsum[hi] - fsum[lo]
    start = np.maximum(hi - LAST_K, lo)  # lo is the 30-day window's start here
    per_row["t_last"][order] = fsum[hi] - fsum[start]
    for k, v in _terminal_history(labels, cents[order], np.floor_divide(seconds[order], DAY),
                                  np.asarray(terminal)[order], lo, hi).items():
        per_row[k][order] = v
    return Aggregates(c_n=c_n, c_cents=c_cents, t_n=t_n, t_f=t_f, **per_row)


def _terminal_history(labels, cents_s, day_s, group_s, lo, hi) -> dict[str, np.ndarray]:
    """Ages, fraud days, trailing frauds and fraud cents over each row's known window [lo, hi)
    of group-sorted rows, with running first/last indices (no loop over rows)."""
    n = len(labels)
    pos = np.arange(n)
    fraud = labels == 1
    last = np.maximum(hi - 1, 0)
    nonempty = hi > lo
    prev_fraud = np.maximum.accumulate(np.where(fraud, pos, -1))  # last fraud at or before
    prev_legit = np.maximum.accumulate(np.where(fraud, -1, pos))
    next_fraud = np.concatenate([np.minimum.accumulate(np.where(fraud, pos, n)[::-1])[::-1], [n]])
    first_f = next_fraud[lo]
    has_f = nonempty & (first_f < hi)
    last_l = prev_legit[last]
    has_l = nonempty & (last_l >= lo)
    # a fraud opens a new day when the group's previous fraud is another group or another day
    before = np.concatenate([[-1], prev_fraud[:-1]])
    b = np.maximum(before, 0)
    new_day = fraud & ((before < 0) | (group_s[b] != group_s) | (day_s[b] != day_s))
    dsum = np.concatenate([[0], np.cumsum(new_day)])
    fc = np.concatenate([[0], np.cumsum(np.where(fraud, cents_s, 0))])
    first_c = np.minimum(first_f, n - 1)
    # the window may start mid-day: its first fraud day counts even if it opened before lo
    days = dsum[hi] - dsum[lo] + (has_f & ~new_day[first_c])
    return {
        "t_first_age": np.where(has_f, day_s - day_s[first_c], -1),
        "t_legit_age": np.where(has_l, day_s - day_s[np.maximum(last_l, 0)], -1),
        "t_fraud_days": np.where(has_f, days, 0),
        "t_trail": np.where(has_l, hi - 1 - last_l, hi - lo),
        "t_fraud_cents": fc[hi] - fc[lo],
    }


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
    x = derive(cents / 100.0, seconds, aggs, names=names)  # amounts in whole cents, as online
    return pd.DataFrame(x, columns=names, index=df.index)


def known_fraud_counts(
    terminal: np.ndarray, seconds: np.ndarray, labels: np.ndarray, delay_days: int = 7,
    window_days: int = 30,
) -> np.ndarray:
    """Per row (sorted by time, id), how many of its terminal's transactions in
    (t - delay - window, t - delay] carry label 1 (e.g. a scenario flag, for diagnostics)."""
    n = len(seconds)
    if n == 0:
        return np.zeros(0, np.int64)
    margin = (window_days + delay_days + 1) * DAY
    order, key = _group_keys(np.asarray(terminal), seconds, margin)
    fsum = np.concatenate([[0], np.cumsum(np.asarray(labels, np.int64)[order])])
    hi = np.searchsorted(key, key - delay_days * DAY, side="right")
    lo = np.searchsorted(key, key - (delay_days + window_days) * DAY, side="right")
    out = np.zeros(n, np.int64)
    out[order] = fsum[hi] - fsum[lo]
    return out
