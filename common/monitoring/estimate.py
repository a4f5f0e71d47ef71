"""Performance before labels (estimated, CBPE-style) and after (realised).

Estimated: our classifiers are calibrated, so a score p is the probability that the label is
positive. Binary: expected accuracy at threshold t is mean(p if p >= t else 1 - p); expected ROC
AUC is sum_{i,j} p_i (1 - p_j) [s_i > s_j] / sum_{i != j} p_i (1 - p_j) (ties count one half),
computed in O(n log n) from prefix sums over the sorted scores. Multiclass: expected accuracy is
the mean of the top probability.

Realised, from log rows joined to their labels: binary accuracy, ROC AUC, average precision and
ECE; multiclass accuracy; ranking hit rate of the interacted item in the logged top-k;
translation corpus chrF of the logged output against the corrected text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["estimated", "realised", "expected_auc", "binary_label"]

ECE_BINS = 10


def expected_auc(p: Sequence[float] | np.ndarray, scores: Any = None) -> float:
    """Expected ROC AUC when item i is positive with probability p_i, ranked by `scores`
    (default: p itself)."""
    p = np.asarray(p, dtype=np.float64)
    s = p if scores is None else np.asarray(scores, dtype=np.float64)
    if len(p) < 2:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    s_sorted, p_sorted = s[order], p[order]
    neg = 1.0 - p_sorted
    # for each i: negatives mass strictly below s_i, plus half the tied mass (minus itself)
    cum = np.concatenate([[0.0], np.cumsum(neg)])
    lo = np.searchsorted(s_sorted, s_sorted, side="left")
    hi = np.searchsorted(s_sorted, s_sorted, side="right")
    below = cum[lo]
    tied = cum[hi] - cum[lo] - neg
    num = float((p_sorted * (below + 0.5 * tied)).sum())
    den = float(p.sum() * neg.sum() - (p * (1 - p)).sum())
    return num / den if den > 0 else float("nan")


def estimated(task: str, scores: Sequence[Any], threshold: float = 0.5) -> dict[str, float]:
    """Expected metrics of a window from calibrated outputs: P(positive) per item for
    "binary", class-probability rows for "multiclass"; other tasks estimate nothing."""
    if not len(scores):
        return {}
    if task == "binary":
        p = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
        out = {"accuracy": float(np.where(p >= threshold, p, 1 - p).mean()),
               "positive_rate": float(p.mean())}
        auc = expected_auc(p)
        if np.isfinite(auc):
            out["roc_auc"] = auc
        return out
    if task == "multiclass":
        probs = np.asarray(scores, dtype=np.float64)
        return {"accuracy": float(probs.max(1).mean())}
    return {}


def binary_label(value: Any, classes: Sequence[str] | None = None) -> int | None:
    """0/1 from a label sent as feedback: a bool, 0/1, or a class name (classes[1] positive)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float) and value in (0, 1):
        return int(value)
    if isinstance(value, str):
        if classes and value in classes:
            return int(classes.index(value) == 1) if len(classes) == 2 else None
        if value in ("0", "1"):
            return int(value)
        if value.lower() in ("true", "false"):
            return int(value.lower() == "true")
    return None


def _ece(p: np.ndarray, y: np.ndarray) -> float:
    bins = np.minimum((p * ECE_BINS).astype(int), ECE_BINS - 1)
    total = 0.0
    for b in np.unique(bins):
        m = bins == b
        total += m.sum() * abs(p[m].mean() - y[m].mean())
    return float(total / len(p))


def _labels(rows: Any) -> list[dict[str, Any]]:
    if hasattr(rows, "to_dict"):  # a pandas DataFrame
        rows = rows.to_dict("records")
    out = []
    for r in rows:
        label = r.get("label")
        if isinstance(label, str):
            try:
                label = json.loads(label)  # labels are stored as JSON text
            except ValueError:
                pass
        out.append({**r, "label": label})
    return out


def realised(task: str, rows: Any, classes: Sequence[str] | None = None,
             threshold: float = 0.5) -> dict[str, float]:
    """Metrics from log rows joined to feedback (columns score, prediction, probs, label);
    rows whose label does not fit the task are left out. Always has `n_labels`."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    rs = _labels(rows)
    if task == "binary":
        pairs = [(float(r["score"]), binary_label(r["label"], classes)) for r in rs
                 if r.get("score") is not None and np.isfinite(r["score"])]
        pairs = [(s, y) for s, y in pairs if y is not None]
        out: dict[str, float] = {"n_labels": float(len(pairs))}
        if not pairs:
            return out
        p, y = np.array([s for s, _ in pairs]), np.array([y for _, y in pairs])
        out["accuracy"] = float(((p >= threshold) == y).mean())
        out["ece"] = _ece(p, y)
        if 0 < y.sum() < len(y):
            out["roc_auc"] = float(roc_auc_score(y, p))
            out["average_precision"] = float(average_precision_score(y, p))
        return out
    if task in ("multiclass", "multilabel"):
        pairs = [(str(r["prediction"]), str(r["label"])) for r in rs
                 if r.get("prediction") is not None and r["label"] is not None]
        out = {"n_labels": float(len(pairs))}
        if pairs:
            out["accuracy"] = float(np.mean([a == b for a, b in pairs]))
        return out
    if task == "ranking":
        hits = []
        for r in rs:
            if r.get("prediction") is None or r["label"] is None:
                continue
            try:
                top = json.loads(r["prediction"])
            except ValueError:
                continue
            hits.append(str(r["label"]) in {str(i) for i in top})
        return {"n_labels": float(len(hits)), **({"hit_rate": float(np.mean(hits))}
                                                  if hits else {})}
    if task == "translation":
        from sacrebleu.metrics import CHRF

        pairs = [(str(r["prediction"]), str(r["label"])) for r in rs
                 if r.get("prediction") is not None and isinstance(r["label"], str)]
        out = {"n_labels": float(len(pairs))}
        if pairs:
            hyp, ref = zip(*pairs, strict=True)
            out["chrf"] = float(CHRF().corpus_score(list(hyp), [list(ref)]).score)
        return out
    raise ValueError(f"unknown task {task!r}")
