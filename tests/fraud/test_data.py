"""Simulator and loaders."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from common.errors import InvalidInput
from fraud_detection.data import SimConfig, load_transactions, simulate

CFG = SimConfig(n_customers=150, n_terminals=300, n_days=30, compromised_terminals_per_day=1,
                compromised_customers_per_day=1)


def test_simulator_is_seeded_and_has_the_three_scenarios():
    a, b, c = simulate(CFG, seed=1), simulate(CFG, seed=1), simulate(CFG, seed=2)
    pd.testing.assert_frame_equal(a, b)
    assert not a["TX_AMOUNT"].equals(c["TX_AMOUNT"])
    assert set(a["TX_FRAUD_SCENARIO"].unique()) == {0, 1, 2, 3}
    assert (a.loc[a.TX_AMOUNT > 220, "TX_FRAUD"] == 1).all()  # scenario 1 (or 3 on top)
    assert a["TX_DATETIME"].is_monotonic_increasing
    assert (a["TX_FRAUD"] == (a["TX_FRAUD_SCENARIO"] > 0)).all()
    assert a["TX_TIME_DAYS"].max() < CFG.n_days and (a["TX_AMOUNT"] >= 0).all()
    # Poisson daily counts around the profile means U(0, 4): about 2 a day per customer
    per_day = len(a) / CFG.n_days / CFG.n_customers
    assert 1.2 < per_day < 2.2


def test_compromised_terminals_defraud_every_transaction_for_28_days():
    df = simulate(CFG, seed=4)
    s2 = df[df.TX_FRAUD_SCENARIO == 2]
    term = s2.TERMINAL_ID.iloc[0]
    first = s2[s2.TERMINAL_ID == term].TX_TIME_DAYS.min()
    window = df[(df.TERMINAL_ID == term) & (df.TX_TIME_DAYS >= first)
                & (df.TX_TIME_DAYS < first + 28)]
    assert (window.TX_FRAUD == 1).all()


def test_loaders_read_parquet_csv_folders_and_mapped_columns(tmp_path):
    df = simulate(CFG, seed=5)
    df.iloc[:500].to_parquet(tmp_path / "a.parquet")
    df.iloc[500:].to_csv(tmp_path / "b.csv", index=False)
    got = load_transactions(tmp_path, need_label=True)
    assert len(got) == len(df)
    assert np.array_equal(got["TRANSACTION_ID"].to_numpy(), df["TRANSACTION_ID"].to_numpy())
    renamed = df.rename(columns={"TX_DATETIME": "when", "TX_AMOUNT": "amt"})
    renamed.to_csv(tmp_path / "mine.csv", index=False)
    got = load_transactions(tmp_path / "mine.csv", {"when": "TX_DATETIME", "amt": "TX_AMOUNT"})
    assert got["TX_AMOUNT"].sum() == pytest.approx(df["TX_AMOUNT"].sum())


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d.drop(columns="TX_AMOUNT"), "TX_AMOUNT"),
        (lambda d: d.assign(TX_DATETIME="not a date"), "TX_DATETIME"),
        (lambda d: d.assign(CUSTOMER_ID="abc"), "CUSTOMER_ID"),
        (lambda d: d.assign(TX_AMOUNT=-d.TX_AMOUNT), "TX_AMOUNT"),
        (lambda d: d.assign(TX_FRAUD=2), "TX_FRAUD"),
    ],
)
def test_schema_errors_name_the_column(tmp_path, mutate, field):
    mutate(simulate(CFG, seed=6).iloc[:50]).to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(InvalidInput) as e:
        load_transactions(tmp_path / "x.csv", need_label=True)
    assert e.value.field == field


def test_mapped_column_missing_is_named(tmp_path):
    simulate(CFG, seed=6).iloc[:20].to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(InvalidInput) as e:
        load_transactions(tmp_path / "x.csv", {"nope": "TX_AMOUNT"})
    assert e.value.field == "nope"
