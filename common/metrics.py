"""Metrics shared by the verticals. Classification metrics wrap scikit-learn; the ranking metrics
are written here because they need the exact top-k conventions of the published protocols
(MAP@k with the min(k, |relevant|) denominator), which no maintained library pins down."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn import metrics as skm

__all__ = [
    "roc_auc",
    "average_precision",
    "accuracy",
    "macro_f1",
    "expected_calibration_error",
    "precision_at_k",
    "recall_at_k",
    "ndcg_at_k",
    "average_precision_at_k",
    "hit_at_k",
    "mean_std",
]


def roc_auc(y_true, y_score, **kw) -> float:
    return float(skm.roc_auc_score(y_true, y_score, **kw))


def average_precision(y_true, y_score) -> float:
    return float(skm.average_precision_score(y_true, y_score))


def accuracy(y_true, y_pred) -> float:
    return float(skm.accuracy_score(y_true, y_pred))


def macro_f1(y_true, y_pred) -> float:
    return float(skm.f1_score(y_true, y_pred, average="macro"))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE with equal-width bins: sum_b |B|/N * |acc(B) - conf(B)|.

    `probs` is (N, C) class probabilities, or (N,) positive-class probabilities for binary.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    if probs.ndim == 1:
        probs = np.stack([1.0 - probs, probs], axis=1)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


# ---- ranking: `ranked` is the list of recommended ids, best first; `relevant` a set ----------
def precision_at_k(ranked: Sequence, relevant: set, k: int) -> float:
    """|top-k ∩ relevant| / k."""
    return len(set(ranked[:k]) & relevant) / k


def recall_at_k(ranked: Sequence, relevant: set, k: int) -> float:
    """|top-k ∩ relevant| / |relevant| (0 when nothing is relevant)."""
    return len(set(ranked[:k]) & relevant) / len(relevant) if relevant else 0.0


def ndcg_at_k(ranked: Sequence, relevant: set, k: int) -> float:
    """Binary-gain NDCG: sum_{i<k, r_i ∈ rel} 1/log2(i+2) / sum_{i<min(k,|rel|)} 1/log2(i+2)."""
    if not relevant:
        return 0.0
    dcg = sum(1.0 / np.log2(i + 2) for i, r in enumerate(ranked[:k]) if r in relevant)
    idcg = sum(1.0 / np.log2(i + 2) for i in range(min(k, len(relevant))))
    return float(dcg / idcg)


def average_precision_at_k(ranked: Sequence, relevant: set, k: int) -> float:
    """AP@k = sum_{i<k} P@(i+1)·[r_i ∈ rel] / min(k, |rel|)."""
    if not relevant:
        return 0.0
    hits, score = 0, 0.0
    for i, r in enumerate(ranked[:k]):
        if r in relevant:
            hits += 1
            score += hits / (i + 1)
    return score / min(k, len(relevant))


def hit_at_k(ranked: Sequence, relevant: set, k: int) -> float:
    """1 if any relevant item is in the top k."""
    return 1.0 if set(ranked[:k]) & relevant else 0.0


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population std (ddof=0) of per-fold / per-seed values."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std())
