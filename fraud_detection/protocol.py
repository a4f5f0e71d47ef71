"""The handbook's evaluation protocol: train / delay / test splits, prequential folds, and the
metrics (ROC AUC, average precision, daily Card Precision@k with known-compromised cards removed).

Follows the Fraud Detection Handbook (ch. 3.2 `get_train_test_set`, ch. 4.2
`card_precision_top_k`, ch. 5.2 prequential splits): the test set drops the transactions of
customers already known to be defrauded (a fraud in the training period, or in the delay period
up to the day before each test day's delay horizon), and CP@k removes cards detected on earlier
test days.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from common import metrics as M

__all__ = ["Split", "day_index", "train_test_split", "prequential_splits", "card_precision_at_k",
           "score_split"]


@dataclass
class Split:
    train: np.ndarray  # row indices into the frame
    test: np.ndarray
    train_start: pd.Timestamp
    test_start: pd.Timestamp


def day_index(df: pd.DataFrame) -> np.ndarray:
    """Calendar day number of each row (days since 1970-01-01)."""
    return (df["TX_DATETIME"].to_numpy().astype("datetime64[D]")).astype(np.int64)


def train_test_split(
    df: pd.DataFrame, train_start: pd.Timestamp, n_train: int = 7, n_delay: int = 7,
    n_test: int = 7, days: np.ndarray | None = None,
) -> Split:
    """Handbook `get_train_test_set`: train days, a delay gap, test days minus known frauds."""
    days = day_index(df) if days is None else days
    s = int(np.datetime64(pd.Timestamp(train_start).normalize(), "D").astype(np.int64))
    train = np.flatnonzero((days >= s) & (days < s + n_train))
    fraud = df["TX_FRAUD"].to_numpy()
    cust = df["CUSTOMER_ID"].to_numpy()
    known = set(cust[train][fraud[train] == 1].tolist())
    test_parts = []
    for k in range(n_test):
        seen = np.flatnonzero(days == s + n_train + k - 1)  # labels known by test day k
        known |= set(cust[seen][fraud[seen] == 1].tolist())
        today = np.flatnonzero(days == s + n_train + n_delay + k)
        test_parts.append(today[~np.isin(cust[today], list(known))])
    test = np.concatenate(test_parts) if test_parts else np.array([], np.int64)
    day0 = pd.Timestamp(np.datetime64(s, "D"))
    return Split(train, test, day0, day0 + pd.Timedelta(days=n_train + n_delay))


def prequential_splits(
    df: pd.DataFrame, train_start: pd.Timestamp, n_folds: int = 4, n_train: int = 7,
    n_delay: int = 7, n_test: int = 7,
) -> list[Split]:
    """Fold f trains from train_start - f * n_test (the handbook's prequential layout)."""
    days = day_index(df)
    out = []
    for f in range(n_folds):
        start = pd.Timestamp(train_start) - pd.Timedelta(days=f * n_test)
        out.append(train_test_split(df, start, n_train, n_delay, n_test, days))
    return out


def card_precision_at_k(
    days: np.ndarray, customer: np.ndarray, fraud: np.ndarray, scores: np.ndarray, k: int = 100
) -> float:
    """Mean over test days of the share of truly compromised cards among the k cards with the
    highest max score that day; cards found on earlier days are removed (handbook ch. 4.2)."""
    frame = pd.DataFrame({"d": days, "c": customer, "y": fraud, "p": scores})
    detected: set[int] = set()
    per_day = []
    for _, day in frame.groupby("d", sort=True):  # one step per test day, not per row
        day = day[~day["c"].isin(detected)]
        cards = day.groupby("c").agg(p=("p", "max"), y=("y", "max"))
        top = cards.sort_values("p", ascending=False, kind="stable").head(k)
        hits = top.index[top["y"] == 1]
        per_day.append(len(hits) / k)
        detected |= set(hits.tolist())
    return float(np.mean(per_day)) if per_day else float("nan")


def score_split(df: pd.DataFrame, test: np.ndarray, scores: np.ndarray, k: int = 100) -> dict:
    """The three handbook metrics on one test set."""
    y = df["TX_FRAUD"].to_numpy()[test]
    return {
        "roc_auc": M.roc_auc(y, scores),
        "average_precision": M.average_precision(y, scores),
        f"card_precision_at_{k}": card_precision_at_k(
            day_index(df)[test], df["CUSTOMER_ID"].to_numpy()[test], y, scores, k
        ),
    }
