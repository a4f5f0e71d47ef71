"""The fraud gate scores an existing bundle on labelled transactions (handbook or API columns)."""

from __future__ import annotations

import pandas as pd
import pytest

from common.artifacts import load_bundle
from common.errors import InvalidInput
from common.registry import get_vertical


@pytest.fixture(scope="module")
def bundle(fraud_root):
    return load_bundle("latest", vertical="fraud", root=fraud_root)


@pytest.mark.slow  # ~7 s: features and scores of 8.5k rows, twice
def test_gate_scores_the_bundle_in_both_layouts(bundle, small_df, tmp_path):
    fraud = get_vertical("fraud")
    assert fraud.gate_metric == "average_precision"
    hb = tmp_path / "handbook.parquet"
    small_df.to_parquet(hb)
    m = fraud.gate_score(bundle, hb, None)
    assert 0.0 < m["average_precision"] <= 1.0 and 0.5 < m["roc_auc"] <= 1.0
    assert m["n"] == len(small_df) and m["frauds"] == small_df["TX_FRAUD"].sum()
    # the API's names, epoch-second timestamps and a boolean `fraud` label: same rows, same score
    api = small_df.sample(frac=1.0, random_state=0).rename(columns={
        "TRANSACTION_ID": "transaction_id", "CUSTOMER_ID": "customer_id",
        "TERMINAL_ID": "terminal_id", "TX_AMOUNT": "amount"})
    api["timestamp"] = (api.pop("TX_DATETIME") - pd.Timestamp(0)) // pd.Timedelta(seconds=1)
    api["fraud"] = api.pop("TX_FRAUD").astype(bool)
    path = tmp_path / "api.csv"
    api[["transaction_id", "timestamp", "customer_id", "terminal_id", "amount",
         "fraud"]].to_csv(path, index=False)
    assert fraud.gate_score(bundle, path, None) == pytest.approx(m)


@pytest.mark.parametrize("case, field, reason", [
    ("no_label", "TX_FRAUD", "column TX_FRAUD is missing"),
    ("no_fraud", "TX_FRAUD", "needs both fraud and legitimate rows"),
    ("wrong_type", "data", "use Parquet or CSV"),
    ("empty", "data", "no transactions"),
])
def test_unfitting_data_is_one_line(bundle, small_df, tmp_path, case, field, reason):
    path = tmp_path / "gate.csv"
    df = small_df.head(300)
    if case == "no_label":
        df = df.drop(columns="TX_FRAUD")
    elif case == "no_fraud":
        df = df.assign(TX_FRAUD=0)
    elif case == "wrong_type":
        path = tmp_path / "gate.txt"
    elif case == "empty":
        df = df.iloc[:0]
    df.to_csv(path, index=False)
    with pytest.raises(InvalidInput) as e:
        get_vertical("fraud").gate_score(bundle, path, None)
    assert e.value.field == field and reason in e.value.reason and "\n" not in str(e.value)
