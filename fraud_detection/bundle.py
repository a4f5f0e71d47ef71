"""Train the served model on a transaction frame and publish a bundle.

Layout of a fraud bundle: `booster.json` (XGBoost's own JSON format), `fraud_config.json`
(feature names, label delay, Platt calibration, decision thresholds, training period),
`store_snapshot.parquet` (the feature-store state at the end of the training data, so fresh
predictors from one bundle answer identically) and `model.safetensors`: the feed-forward net's
weights (`net.*`) and its input scaler (`scaler.*`) when the served model is the blend, else
empty.

The data is split by time: the earlier part trains the trees (and the net: all but its last
week, which early-stops it), the last `calib_days` calibrate the probability, choose the blend
weight exactly as the evaluation does on its validation split (model.choose_blend: best AP,
w = 1 means XGBoost alone and then no net is shipped) and set the review threshold (a daily
review budget) — a later period than the training rows, as in production.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from common.artifacts import Bundle, BundleWriter, fingerprint
from common.errors import InvalidInput
from common.monitoring.profile import PROFILE_FILE
from fraud_detection import monitoring
from fraud_detection.decision import DecisionPolicy
from fraud_detection.features import ALL_FEATURES, DAY, compute_features, to_cents, to_seconds
from fraud_detection.model import XGB_DEFAULTS, Blend, PlattCalibrator, choose_blend
from fraud_detection.protocol import day_index
from fraud_detection.store import SNAPSHOT_COLUMNS
from fraud_detection.train import fit_mlp, fit_xgb, predict_logits

IG_STEPS = 16  # integrated-gradients steps for the net's reason codes (one batched pass)

__all__ = ["train_and_publish", "snapshot_frame"]
log = logging.getLogger(__name__)


def snapshot_frame(df: pd.DataFrame, delay_days: int = 7) -> pd.DataFrame:
    """The rows a store needs after `df` ends: the last (30 + delay) days, with labels."""
    sec = to_seconds(df["TX_DATETIME"])
    keep = sec > sec.max() - (30 + delay_days) * DAY if len(sec) else np.zeros(0, bool)
    label = df["TX_FRAUD"].to_numpy() if "TX_FRAUD" in df else np.full(len(df), -1)
    snap = pd.DataFrame({
        "TRANSACTION_ID": df["TRANSACTION_ID"].to_numpy(),
        "SECONDS": sec,
        "CUSTOMER_ID": df["CUSTOMER_ID"].to_numpy(),
        "TERMINAL_ID": df["TERMINAL_ID"].to_numpy(),
        "CENTS": to_cents(df["TX_AMOUNT"]),
        "LABEL": label,
    })[keep]
    return snap[SNAPSHOT_COLUMNS].astype(np.int64).reset_index(drop=True)


def train_and_publish(
    df: pd.DataFrame,
    root: str | Path,
    *,
    name: str = "fraud-xgb",
    xgb_params: dict[str, Any] | None = None,
    delay_days: int = 7,
    calib_days: int = 7,
    reviews_per_day: float | None = None,
    costs: dict[str, float] | None = None,
    seed: int = 0,
    data_note: str = "",
    blend: bool = True,
    blend_weight: float | None = None,
    net_train_cfg: dict[str, Any] | None = None,
) -> Bundle:
    """Features → XGBoost (+ feed-forward net) → blend weight and Platt calibration on the
    last `calib_days` → thresholds → bundle (see module docstring). `blend=False` ships
    XGBoost alone; `blend_weight` fixes the tree weight instead of choosing it (tests)."""
    t0 = time.time()
    if df["TX_FRAUD"].sum() == 0:
        raise InvalidInput("TX_FRAUD", "the training data holds no fraud: nothing to learn")
    x = compute_features(df, delay_days).to_numpy()
    y = df["TX_FRAUD"].to_numpy()
    days = day_index(df)
    cut = days.max() - calib_days + 1
    fit_rows, cal_rows = days < cut, days >= cut
    if y[fit_rows].sum() == 0 or y[cal_rows].sum() == 0:
        raise InvalidInput("data", f"need frauds both before and in the last {calib_days} days")
    model = fit_xgb(x[fit_rows], y[fit_rows], xgb_params, seed=seed)
    booster = model.get_booster()
    margin = model.predict(x[cal_rows], output_margin=True)
    calib = PlattCalibrator().fit(margin, y[cal_rows])
    probs = calib.predict_proba(margin)
    mix, net, scaler, val_aps = None, None, None, {}
    if blend:
        net_rows = days < cut - 7  # the net's early-stopping week: the last before calibration
        es_rows = fit_rows & ~net_rows
        if y[net_rows].sum() == 0 or y[es_rows].sum() == 0:
            raise InvalidInput("data", "need frauds before and in the week before calibration")
        net, scaler = fit_mlp(x[net_rows], y[net_rows], x[es_rows], y[es_rows], seed=seed,
                              train_cfg=net_train_cfg)
        z_net = predict_logits(net, scaler, x[cal_rows])
        mix, val_aps = choose_blend(margin, z_net, y[cal_rows])
        if blend_weight is not None:
            mix = Blend(blend_weight, mix.cal_tree, mix.cal_net)
        if mix.w == 1.0:  # the calibration week prefers the trees alone: ship no net
            mix = None
        else:
            mix.cal_out = PlattCalibrator().fit(mix.logit(margin, z_net), y[cal_rows])
            probs = mix.predict_proba(margin, z_net)
    block = DecisionPolicy.from_costs(**(costs or {}))
    if reviews_per_day:
        policy = DecisionPolicy.from_review_budget(
            probs, calib_days, reviews_per_day, block.block_threshold
        )
    else:
        policy = block
    from common import metrics as M

    metrics = {
        "calib_roc_auc": M.roc_auc(y[cal_rows], probs),
        "calib_average_precision": M.average_precision(y[cal_rows], probs),
        "calib_ece": M.expected_calibration_error(probs, y[cal_rows]),
        "train_rows": int(fit_rows.sum()),
        "calib_rows": int(cal_rows.sum()),
        "train_seconds": round(time.time() - t0, 2),
        "blend_w": mix.w if mix else 1.0,
        "calib_ap_per_blend_w": {str(k): round(v, 4) for k, v in val_aps.items()},
    }
    w = BundleWriter(root, "fraud", name)
    booster.save_model(str(w.dir / "booster.json"))
    if mix is not None:
        w.save_weights({**{f"net.{k}": v for k, v in net.state_dict().items()},
                        **scaler.tensors()})
    snap = snapshot_frame(df, delay_days)
    snap.to_parquet(w.dir / "store_snapshot.parquet", index=False)
    config = {
        "features": ALL_FEATURES,
        "delay_days": delay_days,
        "calibration": calib.to_dict(),
        "policy": policy.to_dict(),
        "costs": costs or {},
        "xgb_params": {**XGB_DEFAULTS, **(xgb_params or {})},
        "blend": mix.to_dict() if mix else None,
        "net": {"hidden": net.net[0].out_features, "ig_steps": IG_STEPS}
        if mix else None,
        "train_period": [str(df["TX_DATETIME"].min()), str(df["TX_DATETIME"].max())],
    }
    w.add_json("fraud_config.json", config)
    w.add_json(PROFILE_FILE, monitoring.build_profile(
        x[cal_rows], ALL_FEATURES, to_seconds(df["TX_DATETIME"])[cal_rows], probs, {
            "roc_auc": metrics["calib_roc_auc"],
            "average_precision": metrics["calib_average_precision"],
            "ece": metrics["calib_ece"],
            "accuracy": float(((probs >= 0.5) == y[cal_rows]).mean())}))
    return w.publish(
        "fraud_detection.model.make_xgb",
        {"features": ALL_FEATURES, "delay_days": delay_days,
         "model": "xgboost+mlp blend" if mix else "xgboost"},
        metrics=metrics,
        data_fingerprint=fingerprint(data_note, df[["TRANSACTION_ID", "TX_AMOUNT", "TX_FRAUD"]]),
        extra={"policy": policy.to_dict()},
    )
