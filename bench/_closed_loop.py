"""Fraud closed loop on the simulator: weekly `verticals retrain --gate` against the frozen model.

    .venv/bin/python bench/_closed_loop.py --quick --out bench/results/closed_loop_quick.json

1. Simulate `train_days` + `weeks` weeks; after the training period the fraudsters adapt (a
   named concept drift): a compromised card's fraudulent amounts are 2x the usual instead of
   5x, and a compromised terminal skims 30 % of its transactions instead of all of them, so
   the terminal-risk and amount-ratio features the model leans on mean less than they did.
   `--adapted 1 --terminal-share 1` replays without drift.
2. Train and publish the starting bundle on the training period; it is `production` and is
   also kept as the frozen model.
3. Replay week by week in time order with the real components in process (no HTTP, to fit in
   minutes): FraudPredictor's online feature store computes each transaction's features (what
   the server logs), production scores them, the frozen model scores the same rows; rows go to
   a PredictionLog with the fraud `monitor_record` fields and the simulated time as `ts`;
   outcomes feed the store at once (its windows apply the label delay) and reach the
   FeedbackStore only `delay_days` after the transaction (delayed labels).
4. After each week: `common.monitoring.retrain.retrain(..., gate=True)` on the log (the last
   `train_weeks` weeks of labelled rows); a promotion swaps production's scorer (the feature
   store stays, as on a server's swap).
Reported: average precision per week of the closed-loop production model and of the frozen
model on the same rows, their means, and each week's gate outcome.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.aliases import get_aliases, set_alias  # noqa: E402
from common.errors import VerticalsError  # noqa: E402

# the handbook's compromise rates scaled to the population (2 terminals a day of 10,000)
SIZES = {"quick": {"n_customers": 600, "n_terminals": 1200, "train_days": 56, "weeks": 5,
                   "compromised_terminals_per_day": 1, "compromised_customers_per_day": 1},
         "full": {"n_customers": 1500, "n_terminals": 3000, "train_days": 75, "weeks": 10,
                  "compromised_terminals_per_day": 1, "compromised_customers_per_day": 1}}
ADAPTED = 2.0 / 5.0  # compromised-card frauds: 5x the usual amount → 2x after training
TERMINAL_SHARE = 0.3  # compromised terminals skim 30 % of their transactions, not all


def simulate_drifted(n_customers: int, n_terminals: int, train_days: int, weeks: int,
                     seed: int = 0, adapted: float = ADAPTED, terminal_share: float = 1.0,
                     **rates: int) -> tuple[pd.DataFrame, pd.Timestamp]:
    from fraud_detection.data import SimConfig, simulate

    end = pd.Timestamp("2018-10-01")
    start = (end - pd.Timedelta(days=train_days)).strftime("%Y-%m-%d")
    df = simulate(SimConfig(n_customers=n_customers, n_terminals=n_terminals,
                            n_days=train_days + 7 * weeks, start_date=start, **rates),
                  seed=seed)
    hit = (df["TX_FRAUD_SCENARIO"] == 3) & (df["TX_DATETIME"] >= end)
    df.loc[hit, "TX_AMOUNT"] = (df.loc[hit, "TX_AMOUNT"] * adapted).round(2)
    # stealthier compromised terminals: only a share of their transactions are skimmed
    term = (df["TX_FRAUD_SCENARIO"] == 2) & (df["TX_DATETIME"] >= end)
    spared = term & (np.random.default_rng(seed + 1).uniform(size=len(df)) >= terminal_share)
    df.loc[spared, ["TX_FRAUD", "TX_FRAUD_SCENARIO"]] = 0
    return df, end


def _ap(y: np.ndarray, p: np.ndarray) -> float:
    from common import metrics as M

    return float(M.average_precision(y, p)) if 0 < y.sum() < len(y) else float("nan")


def run(mode: str = "quick", seed: int = 0, train_weeks: int = 8,
        adapted: float = ADAPTED, terminal_share: float = TERMINAL_SHARE) -> dict:
    from common.artifacts import load_bundle
    from common.monitoring.feedback import FeedbackStore
    from common.monitoring.predlog import PredictionLog
    from common.monitoring.retrain import retrain
    from fraud_detection.bundle import train_and_publish
    from fraud_detection.explain import BundleScorer
    from fraud_detection.features import to_seconds
    from fraud_detection.monitoring import record_features
    from fraud_detection.predictor import FraudPredictor
    from fraud_detection.store import Tx

    t0 = time.time()
    cfg = SIZES[mode]
    df, end = simulate_drifted(**cfg, seed=seed, adapted=adapted,
                               terminal_share=terminal_share)
    work = Path(tempfile.mkdtemp(prefix="closed-loop-"))
    root, log_dir = work / "store", work / "log"
    base = train_and_publish(df[df["TX_DATETIME"] < end].reset_index(drop=True), root,
                             name="fraud-closed-loop", xgb_params={"n_estimators": 200},
                             seed=seed)
    set_alias(root, "fraud", base.version, "production")
    live = FraudPredictor.load(base.path)  # its store is the server's: features as served
    frozen = BundleScorer(base)
    scorer, version = BundleScorer(base), base.version
    plog = PredictionLog(log_dir, "fraud", start=False)
    feedback = FeedbackStore(plog)
    delay = timedelta(days=live.delay_days)
    replay = df[df["TX_DATETIME"] >= end].reset_index(drop=True)
    pending: list[tuple[datetime, str, bool]] = []  # labels not yet reported
    weeks = []
    for w in range(cfg["weeks"]):
        lo, hi = end + pd.Timedelta(weeks=w), end + pd.Timedelta(weeks=w + 1)
        part = replay[(replay["TX_DATETIME"] >= lo) & (replay["TX_DATETIME"] < hi)]
        secs = to_seconds(part["TX_DATETIME"])
        items = [Tx(int(t), int(s), int(c), int(m), int(round(a * 100)))
                 for t, s, c, m, a in zip(part["TRANSACTION_ID"], secs, part["CUSTOMER_ID"],
                                          part["TERMINAL_ID"], part["TX_AMOUNT"], strict=True)]
        x = live.prepare(items)[0]  # in time order: each row sees the ones before it
        p_live = scorer.score(x, explain=False)[0]
        p_frozen = frozen.score(x, explain=False)[0]
        y = part["TX_FRAUD"].to_numpy()
        decisions = live.policy.decide(p_live)
        plog.append([
            (f"req-{tx.transaction_id}", float(s), version,
             {"id": str(tx.transaction_id), "score": float(p),
              "features": record_features(row, live.features, int(s)), "prediction": d})
            for tx, s, row, p, d in zip(items, secs, x, p_live, decisions, strict=True)])
        plog.flush()
        live.apply_labels([(tx.transaction_id, bool(f)) for tx, f in zip(items, y, strict=True)])
        pending += [(ts.to_pydatetime(), str(t), bool(f)) for ts, t, f in
                    zip(part["TX_DATETIME"], part["TRANSACTION_ID"], y, strict=True)]
        due = [p for p in pending if p[0] + delay <= hi]
        pending = [p for p in pending if p[0] + delay > hi]
        if due:
            feedback.record("fraud", [{"id": t, "label": f} for _, t, f in due])
        week = {"week": w + 1, "start": str(lo.date()), "rows": len(part),
                "frauds": int(y.sum()), "production": version,
                "ap_closed_loop": _ap(y, p_live), "ap_frozen": _ap(y, p_frozen)}
        since = (hi - pd.Timedelta(weeks=train_weeks)).tz_localize(UTC).to_pydatetime()
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                res = retrain("fraud", log_dir, root, since=since, gate=True,
                              reason=f"weekly retrain after week {w + 1}")
            week["gate"] = "promoted" if res["promoted"] else "not gated"
        except VerticalsError as e:
            week["gate"] = "refused" if "not promoted" in e.message else f"skipped: {e.message}"
        week["gate_lines"] = [ln for ln in out.getvalue().splitlines()
                              if ln.startswith(("production ", "candidate "))]
        new = get_aliases(root, "fraud")["production"]
        if new != version:
            version = new
            scorer = BundleScorer(load_bundle(root / "fraud" / new, vertical="fraud"))
        weeks.append(week)
        print(json.dumps({k: v for k, v in week.items() if k != "gate_lines"}), flush=True)
    plog.close()
    scored = [w for w in weeks if np.isfinite(w["ap_closed_loop"]) and np.isfinite(w["ap_frozen"])]
    return {
        "vertical": "fraud", "protocol": "closed_loop_weekly_retrain",
        "dataset": f"simulator seed={seed}, compromised-card fraud amounts x{adapted:g} "
                   "after training",
        "metrics": {"mean_ap_closed_loop": float(np.mean([w["ap_closed_loop"] for w in scored])),
                    "mean_ap_frozen": float(np.mean([w["ap_frozen"] for w in scored])),
                    "weeks_closed_loop_above_frozen": sum(w["ap_closed_loop"] > w["ap_frozen"]
                                                          for w in scored),
                    "weeks": len(scored),
                    "promotions": sum(w["gate"] == "promoted" for w in weeks)},
        "per_week": weeks,
        "config": {**cfg, "mode": mode, "train_weeks": train_weeks, "holdout": 0.25,
                   "margin": 0.0, "adapted_amount_factor": adapted,
                   "terminal_fraud_share": terminal_share},
        "bundle": str(base.path), "duration_s": round(time.time() - t0, 1),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-weeks", type=int, default=8,
                    help="labelled log weeks each retraining uses (default 8)")
    ap.add_argument("--adapted", type=float, default=ADAPTED,
                    help="factor on compromised-card fraud amounts after training (1: no drift)")
    ap.add_argument("--terminal-share", type=float, default=TERMINAL_SHARE,
                    help="share of a compromised terminal's transactions that are fraud "
                         "after training (1: as in training)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    report = run("quick" if a.quick else "full", a.seed, a.train_weeks, a.adapted,
                 a.terminal_share)
    text = json.dumps(report, indent=2)
    if a.out:
        Path(a.out).write_text(text)
    print(json.dumps(report["metrics"], indent=2))


if __name__ == "__main__":
    main()
