"""The closed loop of `verticals retrain VERTICAL --log DIR [--gate]`.

1. Read the prediction log joined with its delayed labels (`report.read_joined`): logged model
   inputs + `label`. Only labelled rows count.
2. Keep the most recent `holdout` share of them (in time order) out of training: that is the
   "most recent labelled window" the gate scores on.
3. The vertical trains a candidate on the older rows, starting from the served bundle's
   configuration (`Vertical.retrain_from_log`), and publishes it; the `candidate` alias moves.
4. With `gate=True`, production and candidate are scored on the held-out rows with the
   vertical's gate metric (`Vertical.score_logged`) and the candidate is promoted only if it
   scores no worse than production - margin (common.gate, the rule of `models promote --gate`).
   A refusal raises InvalidInput after the candidate alias was set: nothing else moves.
"""

from __future__ import annotations

import argparse
import math
from datetime import datetime
from pathlib import Path
from typing import Any

from common.aliases import get_aliases, promote, set_alias
from common.artifacts import Bundle, load_bundle
from common.errors import InvalidInput, NotFound
from common.registry import get_vertical

__all__ = ["retrain", "split_holdout", "MIN_LABELLED"]

MIN_LABELLED = 50  # fewer labelled rows cannot train and gate anything meaningful


def split_holdout(rows: Any, holdout: float) -> tuple[Any, Any]:
    """(older rows to train on, the most recent `holdout` share) of time-ordered rows."""
    if not 0 < holdout < 1:
        raise InvalidInput("holdout", f"must be between 0 and 1 (exclusive), got {holdout}")
    n_hold = max(1, math.ceil(len(rows) * holdout))
    return rows.iloc[:-n_hold].reset_index(drop=True), rows.iloc[-n_hold:].reset_index(drop=True)


def _served_bundle(root: str | Path, vertical: str) -> Bundle:
    """Production if an alias names it, else the newest bundle: the one retraining starts
    from (its features, label delay, decision policy)."""
    prod = get_aliases(root, vertical).get("production")
    if prod is not None:
        return load_bundle(Path(root) / vertical / prod, vertical=vertical)
    return load_bundle("latest", vertical=vertical, root=root)


def retrain(vertical: str, log_dir: str | Path, root: str | Path, *,
            since: datetime | None = None, holdout: float = 0.25, gate: bool = False,
            margin: float = 0.0, reason: str = "") -> dict[str, Any]:
    """Train a candidate from the log (and gate it); returns what happened as a dict."""
    from common.gate import check_margin, run_gate
    from common.monitoring.report import read_joined

    v = get_vertical(vertical)
    if not v.can_retrain_from_log:
        raise InvalidInput("vertical", f"{vertical}: retraining from the prediction log is "
                                       "not supported yet")
    margin = check_margin(margin)
    if not (Path(root) / vertical).is_dir():
        raise NotFound(f"no {vertical} bundles under {root}: retraining starts from one",
                       "root")
    rows = read_joined(log_dir, vertical, since)
    labelled = rows[rows["label"].notna()].reset_index(drop=True)
    if len(labelled) < MIN_LABELLED:
        raise InvalidInput("log", f"{len(labelled)} of {len(rows)} logged {vertical} predictions "
                                  f"have labels; retraining needs at least {MIN_LABELLED}")
    train, held = split_holdout(labelled, holdout)
    base = _served_bundle(root, vertical)
    print(f"{vertical}: training a candidate on {len(train)} labelled log rows "
          f"(from {base.version}); {len(held)} most recent held out", flush=True)
    cand = v.retrain_from_log(train, base, Path(root))
    note = (f"retrained on {len(train)} labelled log rows from {log_dir} "
            f"({train['ts'].iloc[0].isoformat()} .. {train['ts'].iloc[-1].isoformat()})")
    set_alias(root, vertical, cand.version, "candidate", reason=f"{reason} [{note}]".strip())
    result: dict[str, Any] = {"vertical": vertical, "candidate": cand.version,
                              "base": base.version, "train_rows": len(train),
                              "holdout_rows": len(held), "metrics": cand.manifest.get("metrics"),
                              "promoted": False}
    if gate:
        gate_args = argparse.Namespace(margin=margin, limit=None, reason=reason, gate=None)
        why, scored = run_gate(root, vertical, gate_args,
                               score=lambda b: v.score_logged(b, held),
                               data_note=f"{len(held)} most recent labelled log rows")
        rec = promote(root, vertical, reason=why, expect=scored)
        print(f"{vertical}: production {rec['from'] or '-'} -> {rec['to']}")
        result["promoted"] = True
    return result
