"""The one evaluation report shape (see DESIGN.md), built from per-fold or per-seed metrics."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["build_report", "write_report"]


def build_report(
    vertical: str,
    protocol: str,
    dataset: str,
    runs: list[dict[str, float]],
    *,
    per: str = "per_fold",
    baselines: dict[str, dict[str, float]] | None = None,
    config: dict[str, Any] | None = None,
    bundle: str | None = None,
    started: float | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`runs` are the per-fold / per-seed metric dicts; metrics are their mean, metrics_std the
    population std. Every metric name must be snake_case (roc_auc, ndcg_at_10, ...)."""
    if per not in ("per_fold", "per_seed"):
        raise ValueError("per must be 'per_fold' or 'per_seed'")
    names = sorted({k for r in runs for k, v in r.items() if isinstance(v, int | float)})
    metrics, stds = {}, {}
    for n in names:
        vals = [float(r[n]) for r in runs if n in r]
        metrics[n] = float(np.mean(vals))
        stds[n] = float(np.std(vals))
    report = {
        "vertical": vertical,
        "protocol": protocol,
        "dataset": dataset,
        "metrics": metrics,
        "metrics_std": stds,
        per: runs,
        "baselines": baselines or {},
        "config": config or {},
        "bundle": bundle,
        "duration_s": round(time.time() - started, 2) if started else None,
        "created_at": datetime.now(UTC).isoformat(),
    }
    if extra:
        report.update(extra)
    return report


def write_report(path: str | Path, report: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    return path


def _json_default(o: Any):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts → one level with dotted keys ({"a": {"b": 1}} → {"a.b": 1})."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out
