"""Features: the vectorised batch code equals the handbook's pandas definition, and online
features from a replayed stream (in-memory and Redis stores) equal the batch ones row for row."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest

from fraud_detection.data import validate
from fraud_detection.features import (
    ALL_FEATURES,
    HANDBOOK_FEATURES,
    compute_features,
    derive,
    to_cents,
    to_seconds,
)
from fraud_detection.store import MemoryStore, RedisStore, Tx


def handbook_reference(df: pd.DataFrame, delay: int = 7) -> pd.DataFrame:
    """The handbook's own formulation (ch. 3.3): per-group time-based pandas rolling windows."""
    d = df.copy()
    d["TX_AMOUNT"] = to_cents(d["TX_AMOUNT"]) / 100.0
    d["TX_DURING_WEEKEND"] = (d.TX_DATETIME.dt.day_of_week >= 5).astype(float)
    d["TX_DURING_NIGHT"] = (d.TX_DATETIME.dt.hour <= 6).astype(float)
    out = []
    for _, g in d.groupby("CUSTOMER_ID"):
        g = g.sort_values(["TX_DATETIME", "TRANSACTION_ID"]).set_index("TX_DATETIME")
        for w in (1, 7, 30):
            s = g["TX_AMOUNT"].rolling(f"{w}D").sum()
            n = g["TX_AMOUNT"].rolling(f"{w}D").count()
            g[f"CUSTOMER_ID_NB_TX_{w}DAY_WINDOW"] = n.values
            g[f"CUSTOMER_ID_AVG_AMOUNT_{w}DAY_WINDOW"] = (s / n).values
        out.append(g.reset_index())
    d = pd.concat(out)
    out = []
    for _, g in d.groupby("TERMINAL_ID"):
        g = g.sort_values(["TX_DATETIME", "TRANSACTION_ID"]).set_index("TX_DATETIME")
        f_d = g["TX_FRAUD"].rolling(f"{delay}D").sum()
        n_d = g["TX_FRAUD"].rolling(f"{delay}D").count()
        for w in (1, 7, 30):
            f = g["TX_FRAUD"].rolling(f"{delay + w}D").sum() - f_d
            n = g["TX_FRAUD"].rolling(f"{delay + w}D").count() - n_d
            g[f"TERMINAL_ID_NB_TX_{w}DAY_WINDOW"] = n.values
            g[f"TERMINAL_ID_RISK_{w}DAY_WINDOW"] = (f / n).fillna(0).values
        out.append(g.reset_index())
    return pd.concat(out).sort_values(["TX_DATETIME", "TRANSACTION_ID"]).reset_index(drop=True)


def test_batch_features_match_the_handbook_definition(small_df):
    ours = compute_features(small_df)
    ref = handbook_reference(small_df)
    assert len(ours) == len(ref) and ours.shape[1] == len(ALL_FEATURES)
    for col in HANDBOOK_FEATURES:
        np.testing.assert_allclose(ours[col].to_numpy(), ref[col].to_numpy(), rtol=1e-9,
                                   atol=1e-9, err_msg=col)


def test_batch_features_handle_ties_and_unsorted_input():
    t = pd.Timestamp("2018-05-01 10:00:00")
    df = pd.DataFrame({
        "TRANSACTION_ID": [3, 1, 2, 4],
        "TX_DATETIME": [t, t, t, t + pd.Timedelta(days=1)],
        "CUSTOMER_ID": [1, 1, 1, 1], "TERMINAL_ID": [5, 5, 5, 5],
        "TX_AMOUNT": [10.0, 20.0, 30.0, 40.0], "TX_FRAUD": [0, 1, 0, 0],
    })
    x = compute_features(validate(df, need_label=True))
    # (time, id) order: ids 1, 2, 3 at t, then 4 one day later (exactly 1 day: outside (t-1d, t])
    assert x["CUSTOMER_ID_NB_TX_1DAY_WINDOW"].tolist() == [1, 2, 3, 1]
    assert x["CUSTOMER_ID_NB_TX_7DAY_WINDOW"].tolist() == [1, 2, 3, 4]
    assert x["CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW"].tolist() == [20.0, 25.0, 20.0, 25.0]
    assert x["TERMINAL_ID_NB_TX_30DAY_WINDOW"].tolist() == [0, 0, 0, 0]  # all within the delay


def replay(df: pd.DataFrame, store) -> np.ndarray:
    """Score the rows one by one in (time, id) order, posting each label as soon as it is known
    (labels only matter once older than the delay, so this equals 'labels after 7 days')."""
    seconds = to_seconds(df["TX_DATETIME"])
    cents = to_cents(df["TX_AMOUNT"])
    aggs = []
    for i, row in enumerate(df.itertuples(index=False)):
        tx = Tx(int(row.TRANSACTION_ID), int(seconds[i]), int(row.CUSTOMER_ID),
                int(row.TERMINAL_ID), int(cents[i]))
        aggs.append(store.observe(tx))
        store.label(tx.transaction_id, bool(row.TX_FRAUD))
    parts = [np.array([a[k] for a in aggs], np.int64) for k in range(5)]
    return derive(cents / 100.0, seconds, *parts)


def test_online_memory_store_equals_batch_row_for_row(small_df):
    online = replay(small_df, MemoryStore())
    batch = compute_features(small_df).to_numpy()
    assert np.array_equal(online, batch)  # exact: integer cents, the same float operations


@pytest.mark.slow
def test_online_redis_store_equals_batch_row_for_row(small_df, redis_url):
    store = RedisStore(redis_url, f"test-{uuid.uuid4().hex}")
    try:
        df = small_df.iloc[:1200]
        assert np.array_equal(replay(df, store), compute_features(df).to_numpy())
        snap = store.snapshot()
        assert len(snap) > 0 and set(snap["LABEL"]) <= {0, 1}
    finally:
        store.clear()


def test_store_snapshot_round_trip_and_retry(small_df):
    df = small_df.iloc[:3000]
    a = MemoryStore()
    replay(df, a)
    b = MemoryStore()
    b.load(a.snapshot())
    nxt = small_df.iloc[3000]
    tx = Tx(int(nxt.TRANSACTION_ID), int(to_seconds([nxt.TX_DATETIME])[0]),
            int(nxt.CUSTOMER_ID), int(nxt.TERMINAL_ID), int(to_cents(nxt.TX_AMOUNT)))
    first = b.observe(tx)
    assert a.observe(tx) == first
    assert b.observe(tx) == first  # a retry of the same transaction answers the same
    assert b.label(tx.transaction_id, True) and not b.label(10**12, True)
