"""The fraud gate: an existing bundle's average precision (and ROC AUC, Card Precision@100) on a
labelled transactions file, scored offline as `evaluate --bundle` scores a fold.

DATA is a CSV / Parquet file or folder in the handbook layout (TRANSACTION_ID, TX_DATETIME,
CUSTOMER_ID, TERMINAL_ID, TX_AMOUNT, TX_FRAUD) or with the API's names (transaction_id,
timestamp, customer_id, terminal_id, amount, and fraud or label). Features are the vectorised
batch definitions, computed once in time order over the whole file with the bundle's label
delay, so each row sees the history the file holds before it (include the month before the
rows that matter: the windows reach back 30 days plus the delay).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from common.artifacts import Bundle
from common.errors import InvalidInput

__all__ = ["gate_score", "read_labelled"]

# API / feedback names → handbook names (the label route calls it `fraud`)
_API = {"transaction_id": "TRANSACTION_ID", "timestamp": "TX_DATETIME",
        "customer_id": "CUSTOMER_ID", "terminal_id": "TERMINAL_ID", "amount": "TX_AMOUNT",
        "fraud": "TX_FRAUD", "label": "TX_FRAUD"}


def read_labelled(path: str | Path) -> pd.DataFrame:
    """Labelled transactions in either layout, validated and sorted by (time, id)."""
    from fraud_detection.data import _files, _read, validate

    frames = [_read(f) for f in _files(Path(path))]
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    rename: dict[str, str] = {}
    for api, hb in _API.items():
        if api in df.columns and hb not in df.columns and hb not in rename.values():
            rename[api] = hb
    df = df.rename(columns=rename)
    if rename.get("timestamp") and pd.api.types.is_numeric_dtype(df["TX_DATETIME"]):
        # the API's epoch seconds; pandas would read bare integers as nanoseconds
        df["TX_DATETIME"] = pd.to_datetime(df["TX_DATETIME"], unit="s")
    if df.empty:
        raise InvalidInput("data", f"{Path(path).name}: no transactions")
    return validate(df, need_label=True)


def gate_score(bundle: Bundle, data: str | Path) -> dict[str, float]:
    from fraud_detection.explain import BundleScorer
    from fraud_detection.features import compute_features
    from fraud_detection.protocol import score_split

    df = read_labelled(data)
    n_fraud = int(df["TX_FRAUD"].sum())
    if n_fraud in (0, len(df)):
        raise InvalidInput("TX_FRAUD", f"{Path(data).name}: needs both fraud and legitimate "
                                       f"rows ({n_fraud} of {len(df)} are fraud)")
    delay = int(bundle.read_json("fraud_config.json").get("delay_days", 7))
    scorer = BundleScorer(bundle)
    x = compute_features(df, delay)  # as `evaluate --bundle`: all features, then the bundle's
    probs = scorer.score(x[scorer.features].to_numpy(), explain=False)[0]
    m = score_split(df, np.arange(len(df)), probs)
    return {"average_precision": m["average_precision"], "roc_auc": m["roc_auc"],
            "card_precision_at_100": m["card_precision_at_100"], "n": float(len(df)),
            "frauds": float(n_fraud)}
