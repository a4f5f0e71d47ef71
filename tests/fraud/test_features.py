"""Features: the vectorised batch code equals the handbook's pandas definition (and a plain
per-row reading of our history features), and online features from a replayed stream
(in-memory and Redis stores) equal the batch ones row for row, every feature included."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest

from fraud_detection.data import validate
from fraud_detection.features import (
    ALL_FEATURES,
    DAY,
    HANDBOOK_FEATURES,
    HISTORY_FEATURES,
    compute_features,
    derive,
    stack_aggregates,
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
    return derive(cents / 100.0, seconds, stack_aggregates(aggs))


def history_reference(df: pd.DataFrame, delay: int = 7) -> pd.DataFrame:
    """Our history features read literally, one row at a time (small data only)."""
    sec = to_seconds(df["TX_DATETIME"])
    cents = to_cents(df["TX_AMOUNT"])
    cust, term = df["CUSTOMER_ID"].to_numpy(), df["TERMINAL_ID"].to_numpy()
    fraud = df["TX_FRAUD"].to_numpy()
    out = np.zeros((len(df), len(HISTORY_FEATURES)))
    for i in range(len(df)):
        t, day = sec[i], sec[i] // DAY
        card = np.flatnonzero((cust[:i] == cust[i]) & (sec[:i] > t - 30 * DAY))
        n30, s30 = len(card) + 1, cents[card].sum() + cents[i]
        recent = card[sec[card] > t - 14 * DAY]
        known = np.flatnonzero((term == term[i]) & (sec <= t - delay * DAY)
                               & (sec > t - (delay + 30) * DAY))
        kf, kl = known[fraud[known] == 1], known[fraud[known] == 0]
        trail = len(known) - 1 - (np.flatnonzero(fraud[known] == 0)[-1] if len(kl) else -1)
        out[i] = [
            day - sec[kf[0]] // DAY if len(kf) else -1,
            day - sec[kl[-1]] // DAY if len(kl) else -1,
            len(set((sec[kf] // DAY).tolist())),
            trail,
            cents[kf].sum() / len(kf) / 100.0 if len(kf) else 0.0,
            cents[i] / cents[card].max() if len(card) and cents[card].max() > 0 else 0.0,
            int((cents[recent] * n30 > 3 * s30).sum()),
        ]
    return pd.DataFrame(out, columns=HISTORY_FEATURES, index=df.index)


def test_history_features_match_their_plain_definition(small_df):
    df = small_df.iloc[:3000]  # ~18 days: known labels, compromised terminals and cards
    ours = compute_features(df)[HISTORY_FEATURES]
    ref = history_reference(df)
    for col in HISTORY_FEATURES:
        np.testing.assert_allclose(ours[col].to_numpy(), ref[col].to_numpy(), rtol=1e-12,
                                   err_msg=col)
    # not vacuous: the window features see known frauds and large amounts here
    assert (ours["TERMINAL_ID_DAYS_SINCE_FIRST_KNOWN_FRAUD"] >= 7).sum() > 100
    assert (ours["TERMINAL_ID_TRAILING_KNOWN_FRAUDS"] >= 2).sum() > 20
    assert (ours["CUSTOMER_ID_NB_LARGE_14DAY"] > 0).sum() > 100


def test_terminal_ages_tell_a_running_compromise_from_an_ended_one():
    """A terminal whose known history ends in frauds starting 10 days ago reads as a running
    compromise; a month later the same frauds are old and followed by legitimate ones."""
    t0 = pd.Timestamp("2018-05-01 12:00:00")
    rows = [(k, t0 + pd.Timedelta(days=k), 100 + k, 9, 20.0, int(3 <= k < 6)) for k in range(9)]
    rows += [(50, t0 + pd.Timedelta(days=13, hours=1), 7, 9, 30.0, 0),   # 10 days after k=3
             (51, t0 + pd.Timedelta(days=40), 8, 9, 30.0, 0)]
    df = validate(pd.DataFrame(rows, columns=["TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID",
                                              "TERMINAL_ID", "TX_AMOUNT", "TX_FRAUD"]),
                  need_label=True)
    x = compute_features(df).set_index(df["TRANSACTION_ID"])
    now = x.loc[50]  # known: days 0..6 (frauds on days 3, 4, 5; legit on 0-2 and 6)
    assert now["TERMINAL_ID_DAYS_SINCE_FIRST_KNOWN_FRAUD"] == 10
    assert now["TERMINAL_ID_DAYS_SINCE_LAST_KNOWN_LEGIT"] == 7
    assert now["TERMINAL_ID_NB_KNOWN_FRAUD_DAYS"] == 3
    assert now["TERMINAL_ID_TRAILING_KNOWN_FRAUDS"] == 0
    assert now["TERMINAL_ID_AVG_KNOWN_FRAUD_AMOUNT"] == 20.0
    later = x.loc[51]  # known window (day 3 .. day 33]: frauds on days 4, 5 only
    assert later["TERMINAL_ID_DAYS_SINCE_FIRST_KNOWN_FRAUD"] == 36
    assert later["TERMINAL_ID_NB_KNOWN_FRAUD_DAYS"] == 2


def test_online_memory_store_equals_batch_row_for_row(small_df):
    online = replay(small_df, MemoryStore())
    batch = compute_features(small_df)
    assert online.shape[1] == len(ALL_FEATURES)
    assert np.array_equal(online, batch.to_numpy())  # exact: integer cents, same float ops
    assert (batch[HISTORY_FEATURES].nunique() > 5).all()  # the new features vary here


@pytest.mark.slow
def test_online_redis_store_equals_batch_row_for_row(small_df, redis_url):
    store = RedisStore(redis_url, f"test-{uuid.uuid4().hex}")
    try:
        df = small_df.iloc[:3000]  # ~18 days: past the label delay, history features in play
        batch = compute_features(df)
        assert (batch["TERMINAL_ID_NB_KNOWN_FRAUD_DAYS"] > 0).sum() > 50
        assert np.array_equal(replay(df, store), batch.to_numpy())
        snap = store.snapshot()
        assert len(snap) > 0 and set(snap["LABEL"]) <= {0, 1}
    finally:
        store.clear()


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_late_labels_feed_the_terminal_history(backend, request):
    """A label posted after scoring (the POST /fraud/v1/labels path) shows up in the history
    features of the terminal's transactions more than the delay later; relabelling undoes it."""
    if backend == "redis":
        store = RedisStore(request.getfixturevalue("redis_url"), f"test-{uuid.uuid4().hex}")
    else:
        store = MemoryStore()
    t0 = 1_525_176_000  # 2018-05-01 12:00 UTC
    try:
        store.observe(Tx(1, t0, 10, 5, 4_200))
        store.observe(Tx(2, t0 + 3600, 11, 5, 1_000))
        assert store.label(1, True) and store.label(2, True)
        a = store.observe(Tx(3, t0 + 8 * DAY, 12, 5, 500))
        assert (a.t_first_age, a.t_legit_age, a.t_fraud_days, a.t_trail, a.t_fraud_cents) == \
            (8, -1, 1, 2, 5_200)
        assert store.label(2, False)
        b = store.observe(Tx(4, t0 + 8 * DAY + 60, 12, 5, 500))
        assert (b.t_first_age, b.t_legit_age, b.t_trail, b.t_fraud_cents) == (8, 8, 0, 4_200)
        assert (b.c_max, b.c_n[2]) == (500, 2)  # the card's earlier transaction, id 3
    finally:
        if backend == "redis":
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
