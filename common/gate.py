"""The champion/challenger gate of `verticals models promote VERTICAL --gate DATA`.

Both bundles (`production` and `candidate`) are scored on the same labelled DATA with the
vertical's own protocol metric (`Vertical.gate_metric`, higher is better, through
`Vertical.gate_score`); the candidate is promoted only when

    candidate >= production - margin

Everything is scored before any alias moves, so a refusal, bad data or a crash while scoring
leaves the store exactly as it was. With no production alias yet there is nothing to compare:
the candidate is still scored (so unfitting data fails) and promoted with a printed note.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

from common.aliases import get_aliases
from common.artifacts import Bundle, load_bundle
from common.errors import InvalidInput, NotFound
from common.registry import get_vertical

__all__ = ["add_gate_args", "run_gate", "check_margin"]


def add_gate_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("gate (champion/challenger)")
    g.add_argument("--gate", default=None, metavar="DATA",
                   help="labelled data in the vertical's format: promote only if the candidate "
                        "scores no worse than production - margin on it")
    g.add_argument("--margin", type=float, default=0.0,
                   help="how far below production the candidate may score (>= 0, default 0)")
    g.add_argument("--limit", type=int, default=None, metavar="N",
                   help="score only the first N examples of DATA (e.g. translation sentences)")
    g.add_argument("--label-names", default=None,
                   help="nlp-sentiment: names of the sorted label values, e.g. "
                        "negative,positive for SST-2's 0,1")


def check_margin(margin: float) -> float:
    if not math.isfinite(margin) or margin < 0:
        raise InvalidInput("margin", f"must be a number >= 0, got {margin}")
    return float(margin)


def _metric(scores: dict[str, float], metric: str, who: str) -> float:
    value = scores.get(metric)
    if value is None or not math.isfinite(float(value)):
        raise InvalidInput("gate", f"{who}: {metric} is undefined on this data ({value})")
    return float(value)


def _line(who: str, version: str, metric: str, scores: dict[str, float]) -> str:
    rest = [f"{k}={int(v)}" if float(v).is_integer() else f"{k}={float(v):.4f}"
            for k, v in scores.items() if k != metric and isinstance(v, int | float)]
    return " ".join([who, version, f"{metric}={float(scores[metric]):.4f}", *rest])


def run_gate(
    root: str | Path, vertical: str, args: argparse.Namespace,
    score: Callable[[Bundle], dict[str, float]] | None = None, data_note: str | None = None,
) -> tuple[str, dict[str, str]]:
    """Score production and candidate on args.gate; print one line per bundle. Returns the
    history reason (the caller's reason plus both values) and the aliases that were scored
    (for `promote(expect=...)`) when the candidate passes; raises InvalidInput naming the
    metric, both values and the margin when it does not. `score` replaces the vertical's
    `gate_score` on args.gate (e.g. `verticals retrain` scores held-out log rows), described
    in the history by `data_note`."""
    v = get_vertical(vertical)
    metric = v.gate_metric
    if metric is None:
        raise InvalidInput("gate", f"{vertical} has no gate")
    margin = check_margin(args.margin)
    if args.limit is not None and args.limit < 1:
        raise InvalidInput("limit", f"must be >= 1, got {args.limit}")
    data = Path(args.gate) if score is None else None  # each loader says what does not fit
    if score is None:
        def score(bundle: Bundle) -> dict[str, float]:
            return v.gate_score(bundle, data, args)
    before = get_aliases(root, vertical)
    cand = before.get("candidate")
    if cand is None:
        raise NotFound(f"{vertical} has no 'candidate' alias to promote", "alias")
    prod = before.get("production")
    values: dict[str, float] = {}
    for who, version in (("production", prod), ("candidate", cand)):
        if version is None:
            continue
        bundle = load_bundle(Path(root) / vertical / version, vertical=vertical)
        scores = score(bundle)
        values[who] = _metric(scores, metric, who)
        print(_line(who, version, metric, scores), flush=True)
    # scoring takes a while: promote only what was scored
    if get_aliases(root, vertical) != before:
        raise InvalidInput("gate", "the aliases moved while the gate ran; not promoted, run it "
                                   "again")
    c = values["candidate"]
    user_reason = (args.reason or "").strip()
    if prod is None:
        print(f"{vertical}: no production alias yet, nothing to compare; promoting the "
              f"candidate ({metric} {c:.4f})")
        return f"{user_reason} [gate {metric}: candidate {c:.4f}, no production]".strip(), before
    p = values["production"]
    if c < p - margin:
        raise InvalidInput("gate", f"candidate {metric} {c:.4f} is below production {p:.4f} by "
                                   f"{p - c:.4f} (margin {margin:.4f}); not promoted")
    return (f"{user_reason} [gate {metric}: candidate {c:.4f} vs production {p:.4f}, "
            f"margin {margin:.4f}, data {data_note or data}]").strip(), before
