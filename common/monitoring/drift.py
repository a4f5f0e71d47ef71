"""Drift statistics per input and on the output score, with thresholds calibrated from the
reference profile to a target expected run-time between false alarms.

- numeric and the output score: PSI on the reference's quantile bins (plus a missing bin), and
  the Wasserstein distance on standardised values, reported beside it;
- categorical: Jensen-Shannon distance (base 2) over the reference's categories + `__other__`;
- embedding: a mean-shift statistic in the reference's PCA basis, sum_k z_k^2 with
  z_k = (window mean - reference mean) . v_k / sqrt(var_k (1/m + 1/n_ref)): chi-square with k
  degrees of freedom under no drift (Hotelling-like with the reference's diagonal covariance).

Calibration (as Alibi Detect does, for the whole vertical): with `ert` expected windows between
false alarms and F monitored statistics, each gets alpha = 1 / (ert * F) (Bonferroni over the
statistics), so all of them together false-alarm at most once per `ert` windows. The PSI/JS null
is two-sample: a reference of the profile's n and a window of `window` items drawn from the same
multinomial, simulated, then a scaled chi-square fitted to the simulated statistics by moments
gives the (1 - alpha) quantile; alpha is far in the tail, where a few thousand draws alone would
not resolve it. The embedding statistic uses its analytic chi-square null.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
from scipy import stats

from common.monitoring.profile import MISSING, OTHER, QUANTILE_LEVELS

__all__ = ["calibrate", "window_stats", "psi", "js_distance", "alpha_for", "monitored"]

SIMULATIONS = 4000
_LEVELS = np.asarray(QUANTILE_LEVELS)
_SMOOTH = 0.5  # pseudo-count per bin: PSI needs no empty bins


def monitored(profile: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """name -> reference of every statistic a window gets (inputs, then the output score).

    An input whose reference says `"window": false` is logged but not tested per window: its
    distribution follows the clock (hour of day, weekend), so a window of consecutive traffic,
    which spans hours at most, never looks like a reference that spans weeks."""
    refs = {k: v for k, v in (profile.get("features") or {}).items() if v.get("window", True)}
    if profile.get("score"):
        refs[profile.get("score_name") or "score"] = profile["score"]
    return refs


def alpha_for(ert: float, n_stats: int) -> float:
    if ert <= 1:
        raise ValueError("ert (expected windows between false alarms) must be > 1")
    return 1.0 / (ert * max(n_stats, 1))


def _smooth(counts: np.ndarray) -> np.ndarray:
    c = counts + _SMOOTH
    return c / c.sum(-1, keepdims=True)


def psi(ref_counts: np.ndarray, win_counts: np.ndarray) -> np.ndarray:
    """Population stability index between count vectors (last axis = bins)."""
    p, q = _smooth(ref_counts), _smooth(win_counts)
    return ((q - p) * np.log(q / p)).sum(-1)


def js_distance(ref_counts: np.ndarray, win_counts: np.ndarray) -> np.ndarray:
    p, q = _smooth(ref_counts), _smooth(win_counts)
    m = (p + q) / 2
    div = 0.5 * (p * np.log2(p / m)).sum(-1) + 0.5 * (q * np.log2(q / m)).sum(-1)
    return np.sqrt(np.maximum(div, 0.0))


def _ref_probs(ref: dict[str, Any]) -> np.ndarray:
    if ref["kind"] == "numeric":
        return np.array([*ref["probs"], ref.get("missing", 0.0)])
    return np.array(list(ref["probs"].values()))


def _fit_quantile(sim: np.ndarray, alpha: float) -> float:
    """The (1 - alpha) quantile of a scaled chi-square matched to `sim`'s mean and variance."""
    mean, var = float(sim.mean()), float(sim.var())
    if var <= 0 or mean <= 0:
        return float(sim.max())
    scale, df = var / (2 * mean), 2 * mean * mean / var
    return float(scale * stats.chi2.isf(alpha, df))


def _threshold(ref: dict[str, Any], window: int, alpha: float, rng: np.random.Generator) -> float:
    if ref["kind"] == "embedding":
        return float(stats.chi2.isf(alpha, max(len(ref["var"]), 1)))
    p = _ref_probs(ref)
    p = p / p.sum()
    n_ref = max(int(ref["n"]), 1)
    ref_c = rng.multinomial(n_ref, p, size=SIMULATIONS).astype(float)
    win_c = rng.multinomial(window, p, size=SIMULATIONS).astype(float)
    if ref["kind"] == "numeric":
        return _fit_quantile(psi(ref_c, win_c), alpha)
    # the JS distance is the square root of a divergence that is chi-square-like
    return math.sqrt(_fit_quantile(js_distance(ref_c, win_c) ** 2, alpha))


def calibrate(profile: dict[str, Any], window: int, ert: float, seed: int = 0
              ) -> dict[str, float]:
    """Threshold per monitored statistic for windows of `window` items."""
    refs = monitored(profile)
    alpha = alpha_for(ert, len(refs))
    rng = np.random.default_rng(seed)
    return {name: _threshold(ref, window, alpha, rng) for name, ref in refs.items()}


def _numeric(ref: dict[str, Any], values: Any) -> tuple[float, dict[str, Any]]:
    x = (values.astype(np.float64, copy=False) if isinstance(values, np.ndarray) else
         np.array([math.nan if v is None else v for v in values], dtype=np.float64))
    ok = np.sort(x[np.isfinite(x)])
    edges = np.asarray(ref["edges"])
    counts = np.diff(np.searchsorted(ok, edges, side="right"), prepend=0, append=len(ok))
    win = np.append(counts, len(x) - len(ok)).astype(float)
    ref_c = _ref_probs(ref) * ref["n"]
    extra: dict[str, Any] = {"n": int(len(ok))}
    if len(ok) and ref.get("quantiles"):  # empirical quantiles of the sorted window
        wq = ok[np.minimum((_LEVELS * len(ok)).astype(int), len(ok) - 1)]
        extra["wasserstein"] = float(np.abs(wq - np.asarray(ref["quantiles"])).mean()
                                     / max(ref.get("std") or 0.0, 1e-12))
    return float(psi(ref_c, win)), extra


def _categorical(ref: dict[str, Any], values: list[Any]) -> tuple[float, dict[str, Any]]:
    index = {k: i for i, k in enumerate(ref["probs"])}
    other = index.get(OTHER)
    win = np.zeros(len(index))
    for v, c in Counter(values).items():
        i = index.get(MISSING if v is None else str(v), other)
        if i is not None:
            win[i] += c
    ref_c = _ref_probs(ref) * ref["n"]
    return float(js_distance(ref_c, win)), {"n": len(values)}


def _embedding(ref: dict[str, Any], values: Any) -> tuple[float, dict[str, Any]]:
    x = (values if isinstance(values, np.ndarray) else
         np.asarray([v for v in values if v is not None], dtype=np.float64))
    if not len(x) or not ref["var"]:
        return 0.0, {"n": len(x)}
    diff = x.mean(0) - np.asarray(ref["mean"])
    z = np.asarray(ref["basis"]) @ diff
    var = np.asarray(ref["var"]) * (1 / len(x) + 1 / ref["n"])
    return float((z * z / var).sum()), {"n": len(x)}


_STAT = {"numeric": (_numeric, "psi"), "categorical": (_categorical, "jensen_shannon"),
         "embedding": (_embedding, "mean_shift_chi2")}


def window_stats(profile: dict[str, Any], columns: dict[str, Any],
                 thresholds: dict[str, float]) -> dict[str, dict[str, Any]]:
    """{name: {"statistic", "threshold", "method", "drift", ...}} for one window's columns
    (keyed by feature name, and the profile's score name for the output score): lists, or
    numpy arrays (float with NaN for missing; (n, d) for embeddings)."""
    out = {}
    for name, ref in monitored(profile).items():
        values = columns.get(name)
        if values is None or name not in thresholds:
            continue
        fn, method = _STAT[ref["kind"]]
        stat, extra = fn(ref, values)
        out[name] = {"statistic": stat, "threshold": thresholds[name], "method": method,
                     "drift": bool(stat > thresholds[name]), **extra}
    return out
