"""Reason codes: the features that pushed a score up the most, with stable names.

For the trees we use XGBoost's own TreeSHAP (`pred_contribs=True`), exact and fast enough for
one transaction online, so no `shap` package is needed. Contributions are in log-odds.
"""

from __future__ import annotations

import numpy as np

__all__ = ["REASON_CODES", "tree_contributions", "top_reasons"]

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
