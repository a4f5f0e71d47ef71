"""Fraud's closed loop: a candidate from the prediction log (`verticals retrain fraud`).

The log holds every served transaction's model features exactly as the live feature store
computed them (`f_<feature>`, fraud_detection.monitoring) and, once the bank reports it, the
label (feedback on /fraud/v1/labels, JSON true/false). A candidate is XGBoost on the older
labelled rows with the served bundle's parameters, Platt-calibrated on the most recent quarter
of them (a later period than the trees saw, as in `train_and_publish`), shipped with the served
bundle's decision policy, label delay and store snapshot (a swap keeps the live store anyway:
FraudPredictor.adopt_state). XGBoost alone: the blend's net needs more rows than a few weeks of
labels give, and its weight is chosen on the calibration rows, which here are few.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from common import metrics as M
from common.artifacts import Bundle, BundleWriter, fingerprint
from common.errors import InvalidInput
from common.monitoring.estimate import binary_label
from common.monitoring.profile import PROFILE_FILE
from fraud_detection import monitoring
from fraud_detection.model import PlattCalibrator
from fraud_detection.train import fit_xgb

__all__ = ["logged_xy", "retrain_from_log", "score_logged"]
CALIB_SHARE = 0.25
# AP on fewer frauds is noise: a gate on ~30 frauds promoted candidates that then lost 0.2 AP
# the next week (bench/_closed_loop.py)
GATE_MIN_FRAUDS = 50


def logged_xy(rows: pd.DataFrame, features: list[str]
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feature rows, 0/1 labels, and which rows they are (a mask): rows without a 0/1 label or
    with a missing feature are left out."""
    missing = [f"f_{n}" for n in features if f"f_{n}" not in rows.columns]
    if missing:
        raise InvalidInput("log", f"the fraud log lacks {len(missing)} model feature columns "
                                  f"({', '.join(missing[:3])}...): logged by an older server?")
    y = np.array([binary_label(json.loads(v)) if isinstance(v, str) else binary_label(v)
                  for v in rows["label"]], dtype=object)
    ok = np.array([v is not None for v in y]) & rows[[f"f_{n}" for n in features]].notna().all(
        axis=1).to_numpy()
    x = rows.loc[ok, [f"f_{n}" for n in features]].to_numpy(np.float64)
    return x, y[ok].astype(np.int64), ok


def _hours_as_seconds(rows: pd.DataFrame) -> np.ndarray:
    """Seconds whose hour of day is the logged one (what the profile's TX_HOUR reads)."""
    col = f"f_{monitoring.HOUR}"
    if col in rows.columns:
        return rows[col].fillna(0).to_numpy(np.int64) * 3600
    ts = pd.to_datetime(rows["ts"], utc=True)  # resolution-agnostic (pandas may use us)
    return ((ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(np.int64)


def retrain_from_log(rows: pd.DataFrame, base: Bundle, root: Path) -> Bundle:
    t0 = time.time()
    cfg = base.read_json("fraud_config.json")
    features = cfg["features"]
    x, y, ok = logged_xy(rows, features)
    seconds = _hours_as_seconds(rows[ok])
    n_cal = max(1, int(len(y) * CALIB_SHARE))
    fit, cal = slice(0, len(y) - n_cal), slice(len(y) - n_cal, len(y))
    for part, sl in (("training", fit), ("calibration", cal)):
        if not 0 < y[sl].sum() < len(y[sl]):
            raise InvalidInput("log", f"the labelled {part} rows need both fraud and legitimate "
                                      f"transactions ({int(y[sl].sum())} of {len(y[sl])} fraud)")
    model = fit_xgb(x[fit], y[fit], cfg.get("xgb_params"))
    margin = model.predict(x[cal], output_margin=True)
    calib = PlattCalibrator().fit(margin, y[cal])
    probs = calib.predict_proba(margin)
    metrics = {
        "calib_roc_auc": M.roc_auc(y[cal], probs),
        "calib_average_precision": M.average_precision(y[cal], probs),
        "calib_ece": M.expected_calibration_error(probs, y[cal]),
        "train_rows": int(len(y) - n_cal), "calib_rows": int(n_cal),
        "train_seconds": round(time.time() - t0, 2), "blend_w": 1.0,
    }
    w = BundleWriter(root, "fraud", f"{base.manifest['name'].removesuffix('-retrained')}"
                                    "-retrained")
    model.get_booster().save_model(str(w.dir / "booster.json"))
    w.add_file("store_snapshot.parquet", base.file("store_snapshot.parquet"))
    ts = pd.to_datetime(rows["ts"])
    config = {**cfg, "calibration": calib.to_dict(), "blend": None, "net": None,
              "train_period": [str(ts.min()), str(ts.max())], "retrained_from": base.version}
    w.add_json("fraud_config.json", config)
    w.add_json(PROFILE_FILE, monitoring.build_profile(
        x[cal], features, seconds[cal], probs, {"roc_auc": metrics["calib_roc_auc"],
                "average_precision": metrics["calib_average_precision"],
                "ece": metrics["calib_ece"],
                "accuracy": float(((probs >= 0.5) == y[cal]).mean())}))
    return w.publish(
        "fraud_detection.model.make_xgb",
        {"features": features, "delay_days": cfg["delay_days"], "model": "xgboost",
         "retrained_from": base.version},
        metrics=metrics,
        data_fingerprint=fingerprint("prediction log", rows[["request_id", "label"]]),
        extra={"policy": cfg["policy"]},
    )


def score_logged(bundle: Bundle, rows: pd.DataFrame) -> dict[str, float]:
    """The gate's metrics of a bundle on labelled log rows (its own feature columns)."""
    from fraud_detection.explain import BundleScorer

    scorer = BundleScorer(bundle)
    x, y, _ = logged_xy(rows, scorer.features)
    if y.sum() < GATE_MIN_FRAUDS or y.sum() == len(y):
        raise InvalidInput("log", f"the held-out log rows hold {int(y.sum())} frauds in "
                                  f"{len(y)} transactions; comparing average precision needs "
                                  f"at least {GATE_MIN_FRAUDS} and some legitimate ones")
    probs = scorer.score(x, explain=False)[0]
    return {"average_precision": M.average_precision(y, probs), "roc_auc": M.roc_auc(y, probs),
            "n": float(len(y)), "frauds": float(y.sum())}
