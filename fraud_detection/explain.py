"""Reason codes: the features that pushed a score up the most, with stable names.

For the trees we use XGBoost's own TreeSHAP (`pred_contribs=True`), exact and fast enough for
one transaction online, so no `shap` package is needed. For the feed-forward net of a blend,
integrated gradients (model.integrated_gradients: a dozen lines, all steps in one batched
forward/backward; Captum would add a dependency and per-call Python overhead for the same
numbers on a plain MLP). Both are log-odds contributions; `BundleScorer` combines them with
the blend's coefficients (the blend is linear in the two log-odds), so reasons stay additive.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["REASON_CODES", "tree_contributions", "top_reasons", "BundleScorer"]

# Stable public names: a feature may be renamed internally, these codes never change.
REASON_CODES = {
    "TX_AMOUNT": "AMOUNT",
    "TX_DURING_WEEKEND": "WEEKEND",
    "TX_DURING_NIGHT": "NIGHT",
    "CUSTOMER_ID_NB_TX_1DAY_WINDOW": "CARD_TX_COUNT_1D",
    "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW": "CARD_AVG_AMOUNT_1D",
    "CUSTOMER_ID_NB_TX_7DAY_WINDOW": "CARD_TX_COUNT_7D",
    "CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW": "CARD_AVG_AMOUNT_7D",
    "CUSTOMER_ID_NB_TX_30DAY_WINDOW": "CARD_TX_COUNT_30D",
    "CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW": "CARD_AVG_AMOUNT_30D",
    "TERMINAL_ID_NB_TX_1DAY_WINDOW": "TERMINAL_TX_COUNT_1D",
    "TERMINAL_ID_RISK_1DAY_WINDOW": "TERMINAL_FRAUD_RATE_1D",
    "TERMINAL_ID_NB_TX_7DAY_WINDOW": "TERMINAL_TX_COUNT_7D",
    "TERMINAL_ID_RISK_7DAY_WINDOW": "TERMINAL_FRAUD_RATE_7D",
    "TERMINAL_ID_NB_TX_30DAY_WINDOW": "TERMINAL_TX_COUNT_30D",
    "TERMINAL_ID_RISK_30DAY_WINDOW": "TERMINAL_FRAUD_RATE_30D",
    "AMOUNT_OVER_CUSTOMER_AVG_7DAY": "AMOUNT_VS_CARD_AVG_7D",
    "AMOUNT_OVER_CUSTOMER_AVG_30DAY": "AMOUNT_VS_CARD_AVG_30D",
    "CUSTOMER_AVG_1DAY_OVER_30DAY": "CARD_SPEND_SURGE_1D",
    "TERMINAL_ID_NB_FRAUD_7DAY_WINDOW": "TERMINAL_FRAUD_COUNT_7D",
    "TERMINAL_ID_NB_FRAUD_30DAY_WINDOW": "TERMINAL_FRAUD_COUNT_30D",
    "TERMINAL_ID_FRAUDS_LAST3_KNOWN": "TERMINAL_RECENT_FRAUDS",
    "TERMINAL_ID_DAYS_SINCE_FIRST_KNOWN_FRAUD": "TERMINAL_FRAUD_AGE_DAYS",
    "TERMINAL_ID_DAYS_SINCE_LAST_KNOWN_LEGIT": "TERMINAL_LAST_GOOD_AGE_DAYS",
    "TERMINAL_ID_NB_KNOWN_FRAUD_DAYS": "TERMINAL_FRAUD_DAYS_30D",
    "TERMINAL_ID_TRAILING_KNOWN_FRAUDS": "TERMINAL_FRAUD_STREAK",
    "TERMINAL_ID_AVG_KNOWN_FRAUD_AMOUNT": "TERMINAL_FRAUD_AVG_AMOUNT",
    "AMOUNT_OVER_CUSTOMER_MAX_30DAY": "AMOUNT_VS_CARD_MAX_30D",
    "CUSTOMER_ID_NB_LARGE_14DAY": "CARD_LARGE_TX_COUNT_14D",
}


def tree_contributions(booster, x) -> np.ndarray:
    """TreeSHAP values (n, n_features) in log-odds for an array or DMatrix; bias dropped."""
    import xgboost as xgb

    dm = x if isinstance(x, xgb.DMatrix) else xgb.DMatrix(x, nthread=1)
    return booster.predict(dm, pred_contribs=True)[:, :-1]


def top_reasons(
    contribs: np.ndarray, x: np.ndarray, names: list[str], k: int = 3
) -> list[list[dict]]:
    """Per row, the k features with the largest positive contribution (ties by name)."""
    out = []
    for c, v in zip(contribs, x, strict=True):
        order = sorted(range(len(names)), key=lambda j: (-float(c[j]), names[j]))
        out.append([
            {"code": REASON_CODES.get(names[j], names[j]), "feature": names[j],
             "value": float(v[j]), "contribution": round(float(c[j]), 6)}
            for j in order[:k] if c[j] > 0
        ])
    return out


class BundleScorer:
    """A bundle's model on feature rows: calibrated probability and per-feature log-odds
    contributions, for XGBoost alone or the XGBoost + feed-forward blend (see bundle.py)."""

    def __init__(self, bundle: Any, nthread: int = 1):
        import xgboost as xgb

        from fraud_detection.model import Blend, FeedForward, PlattCalibrator, Standardizer

        cfg = bundle.read_json("fraud_config.json")
        self.features: list[str] = cfg["features"]
        self.booster = xgb.Booster()
        self.booster.load_model(str(bundle.file("booster.json")))
        self.booster.set_param({"nthread": nthread})
        self.calib = PlattCalibrator.from_dict(cfg["calibration"])
        self.blend = Blend.from_dict(cfg["blend"]) if cfg.get("blend") else None
        if self.blend is not None:
            t = bundle.state_dict()
            self.scaler = Standardizer.from_tensors(t)
            net_cfg = cfg["net"]
            self.net = FeedForward(len(self.features), hidden=int(net_cfg["hidden"])).eval()
            self.net.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("net.")})
            self.ig_steps = int(net_cfg["ig_steps"])
            self.baseline = torch.zeros(1, len(self.features))  # the training mean (standardised)

    def score(self, x: np.ndarray, explain: bool = True):
        """(probabilities, contributions (n, d) in final log-odds or None) for feature rows."""
        import xgboost as xgb

        # one thread: OpenMP spin-waits make a parallel 1-row DMatrix 100x slower on busy CPUs
        dm = xgb.DMatrix(x, nthread=1)
        z_tree = self.booster.predict(dm, output_margin=True)
        shap = tree_contributions(self.booster, dm) if explain else None
        if self.blend is None:
            return self.calib.predict_proba(z_tree), (self.calib.a_ * shap if explain else None)
        from fraud_detection.model import integrated_gradients

        z = torch.from_numpy(self.scaler.transform(x))
        with torch.no_grad():  # row-wise: a batch answers exactly as its rows one by one
            z_net = self.net.forward_rowwise(z).double().numpy()
        probs = self.blend.predict_proba(z_tree, z_net)
        if not explain:
            return probs, None
        ig = integrated_gradients(self.net.forward_rowwise, z, self.baseline, self.ig_steps)
        c_t, c_n, _ = self.blend.coefficients()
        a = self.blend.cal_out.a_ if self.blend.cal_out else 1.0
        return probs, a * (c_t * shap + c_n * ig)
