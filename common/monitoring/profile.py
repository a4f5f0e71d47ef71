"""Reference profiles: what a model's inputs and outputs looked like at training time.

A profile is a JSON-able dict stored in the bundle as `monitoring_profile.json`
(`BundleWriter.add_json(PROFILE_FILE, build_profile(...))` before publish). Each vertical builds
it with the same feature function its predictor's `monitor_record` uses, on validation data.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from common.artifacts import Bundle

__all__ = ["PROFILE_FILE", "TASKS", "numeric_ref", "categorical_ref", "embedding_ref",
           "build_profile", "load_profile", "OTHER", "MISSING"]

PROFILE_FILE = "monitoring_profile.json"
TASKS = ("binary", "multiclass", "multilabel", "ranking", "translation")
OTHER = "__other__"  # categories beyond the reference's most frequent ones
MISSING = "__missing__"  # a categorical value of None
# levels at which numeric quantiles are kept, for the Wasserstein distance on standardised values
QUANTILE_LEVELS = tuple(round(0.025 + 0.05 * i, 3) for i in range(20))


def _floats(values: Iterable[Any]) -> np.ndarray:
    return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)


def numeric_ref(values: Iterable[Any], bins: int = 10) -> dict[str, Any]:
    """Quantile bins of a numeric input. Edges are the inner quantiles (ties merged), so bin i
    is (edges[i-1], edges[i]] with open ends; NaN/None count in "missing"."""
    x = _floats(values)
    ok = x[np.isfinite(x)]
    if not len(ok):
        raise ValueError("numeric_ref needs at least one finite value")
    edges = np.unique(np.quantile(ok, np.arange(1, bins) / bins))
    counts = np.bincount(np.searchsorted(edges, ok, side="left"), minlength=len(edges) + 1)
    n = len(x)
    return {"kind": "numeric", "edges": edges.tolist(), "probs": (counts / n).tolist(),
            "missing": float((n - len(ok)) / n), "n": int(n), "mean": float(ok.mean()),
            "std": float(ok.std()), "quantiles": np.quantile(ok, QUANTILE_LEVELS).tolist()}


def categorical_ref(values: Iterable[Any], max_categories: int = 50) -> dict[str, Any]:
    """Frequencies of the `max_categories` most common values; the rest pool in `__other__`."""
    counts = Counter(MISSING if v is None else str(v) for v in values)
    n = sum(counts.values())
    if not n:
        raise ValueError("categorical_ref needs at least one value")
    top = dict(counts.most_common(max_categories))
    probs = {k: c / n for k, c in top.items()}
    probs[OTHER] = (n - sum(top.values())) / n
    return {"kind": "categorical", "probs": probs, "n": int(n)}


def embedding_ref(matrix: Any, components: int = 16) -> dict[str, Any]:
    """Mean and the top principal directions (with their variances) of an (n, d) matrix."""
    x = np.asarray(matrix, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError("embedding_ref needs an (n >= 2, d) matrix")
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    k = min(components, len(s))
    var = s[:k] ** 2 / (len(x) - 1)
    keep = var > 1e-12 * max(var.max(), 1e-300)  # a direction without variance tests nothing
    return {"kind": "embedding", "mean": mean.tolist(), "basis": vt[:k][keep].tolist(),
            "var": var[keep].tolist(), "n": int(len(x))}


def build_profile(features: dict[str, dict], *, task: str, score: dict | None,
                  metrics: dict[str, float], classes: Sequence[str] | None = None,
                  score_name: str = "score") -> dict[str, Any]:
    """The whole profile: per-feature references, the output score's, validation metrics."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, not {task!r}")
    for name, ref in {**features, **({score_name: score} if score else {})}.items():
        if not isinstance(ref, dict) or ref.get("kind") not in ("numeric", "categorical",
                                                                  "embedding"):
            raise ValueError(f"reference of {name!r} is not a numeric/categorical/embedding ref")
    if score_name in features:
        raise ValueError(f"a feature may not be called {score_name!r} (the output score)")
    return {"schema": 1, "task": task, "features": dict(features), "score": score,
            "score_name": score_name, "metrics": {k: float(v) for k, v in metrics.items()},
            "classes": list(classes) if classes is not None else None,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds")}


def load_profile(bundle: Bundle) -> tuple[dict[str, Any] | None, str | None]:
    """(profile, None), or (None, why monitoring is off for this bundle)."""
    path = bundle.path / PROFILE_FILE
    if not path.is_file():
        return None, (f"bundle {bundle.name}/{bundle.version} has no reference profile "
                      "(trained before monitoring)")
    try:
        profile = bundle.read_json(PROFILE_FILE)
    except (OSError, ValueError) as e:
        return None, f"bundle {bundle.name}/{bundle.version}: unreadable profile ({e})"
    if not isinstance(profile, dict) or profile.get("schema") != 1:
        return None, f"bundle {bundle.name}/{bundle.version}: profile schema is not 1"
    return profile, None
