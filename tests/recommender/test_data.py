"""Loaders for every supported format, implicit thresholding, and the two splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from common.errors import InvalidInput
from recommender.data import (
    encode,
    leave_last_out_split,
    load_interactions,
    load_titles,
    stratified_split,
    synthetic_interactions,
    to_implicit,
)

ROWS = [(1, 10, 5, 100), (1, 11, 2, 200), (2, 10, 4, 150), (2, 12, 3, 50)]


def test_movielens_formats_read_the_same(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ROWS))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "ratings.dat").write_text("".join(f"{u}::{i}::{r}::{t}\n"
                                                        for u, i, r, t in ROWS))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in ROWS))
    frames = [load_interactions(tmp_path / d) for d in "abc"]
    for f in frames:
        assert list(f.columns) == ["user_id", "item_id", "rating", "timestamp"]
        assert f["user_id"].tolist() == ["1", "1", "2", "2"]
        assert f["rating"].tolist() == [5.0, 2.0, 4.0, 3.0]
    pd.testing.assert_frame_equal(frames[0], frames[1])
    pd.testing.assert_frame_equal(frames[0], frames[2])


def test_mapped_columns_parquet_and_datetime(tmp_path):
    df = pd.DataFrame({"customer": ["a", "b"], "sku": ["x", "y"],
                       "when": ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"]})
    df.to_parquet(tmp_path / "events.parquet")
    got = load_interactions(tmp_path / "events.parquet", user_col="customer", item_col="sku",
                            time_col="when")
    assert got["rating"].tolist() == [1.0, 1.0]
    assert got["timestamp"].tolist() == [1704067200, 1704153600]
    with pytest.raises(InvalidInput, match="user_col"):
        load_interactions(tmp_path / "events.parquet", user_col="nope")


def test_missing_columns_and_paths_are_explained(tmp_path):
    pd.DataFrame({"a": [1], "b": [2]}).to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(InvalidInput, match="user and item"):
        load_interactions(tmp_path / "x.csv")
    with pytest.raises(InvalidInput, match="does not exist"):
        load_interactions(tmp_path / "missing.csv")


def test_titles_from_u_item(tmp_path):
    (tmp_path / "u.item").write_bytes("1|Toy Story (1995)|x\n2|Caf\xe9 (1990)|y\n"
                                      .encode("latin-1"))
    assert load_titles(tmp_path) == {"1": "Toy Story (1995)", "2": "Café (1990)"}
    (tmp_path / "empty").mkdir()
    assert load_titles(tmp_path / "empty") == {}


def test_implicit_threshold_and_duplicates():
    df = pd.DataFrame({"user_id": ["u", "u", "u", "v"], "item_id": ["a", "a", "b", "a"],
                       "rating": [5.0, 4.0, 2.0, 4.0], "timestamp": [1, 3, 2, 1]})
    out = to_implicit(df, threshold=4)
    assert sorted(zip(out["user_id"], out["item_id"], strict=True)) == [("u", "a"), ("v", "a")]
    assert out.loc[out["user_id"] == "u", "timestamp"].item() == 3  # latest duplicate kept
    enc = encode(df)
    assert enc.matrix(df).max() == 1.0  # duplicate events count once


def test_stratified_split_follows_ms_recommenders():
    df = synthetic_interactions(n_users=60, n_items=30, per_user=10, seed=3)
    train, test = stratified_split(df, ratio=0.75, filter_by="item", seed=42)
    assert len(train) + len(test) == len(df)
    assert not set(train.index) & set(test.index)
    for item, g in df.groupby("item_id"):
        n_train = (train["item_id"] == item).sum()
        assert n_train == int(np.floor(0.75 * len(g) + 1e-9))  # rank/count <= 0.75
    # the same draws as MS: np.random.seed(seed); rand(n) over the frame's rows
    np.random.seed(42)
    r = np.random.rand(len(df))
    first = df.assign(r=r).sort_values(["item_id", "r"]).groupby("item_id").head(1).index
    assert set(first) <= set(train.index) | set(df.groupby("item_id").filter(
        lambda g: len(g) == 1).index)
    again = stratified_split(df, seed=42)
    pd.testing.assert_frame_equal(train, again[0])


def test_leave_last_out_takes_each_users_latest():
    df = pd.DataFrame({"user_id": ["u", "u", "u", "v", "w", "w"],
                       "item_id": ["a", "b", "c", "a", "b", "c"],
                       "rating": 1.0, "timestamp": [3, 9, 5, 1, 2, 2]})
    train, test = leave_last_out_split(df)
    assert sorted(zip(test["user_id"], test["item_id"], strict=True)) == [("u", "b"), ("w", "c")]
    pairs = set(zip(train["user_id"], train["item_id"], strict=True))
    assert ("v", "a") in pairs  # a single event stays in train
    assert len(train) + len(test) == len(df)


def test_synthetic_is_seeded_and_long_tailed():
    a, b = synthetic_interactions(seed=5), synthetic_interactions(seed=5)
    pd.testing.assert_frame_equal(a, b)
    counts = a["item_id"].value_counts().to_numpy()
    assert counts[:20].sum() > 3 * counts[-20:].sum()
    assert (a.groupby("user_id")["timestamp"].is_monotonic_increasing).all()


def test_times_matrix_aligns_with_interactions(small_df):
    enc = encode(small_df)
    X, T = enc.matrix(small_df), enc.times(small_df)
    assert (X != 0).toarray().tolist() == (T != 0).toarray().tolist()  # same pattern
    row = small_df.iloc[5]
    u, i = enc.user_index[row["user_id"]], enc.item_index[row["item_id"]]
    offset = small_df["timestamp"].min() - 1.0  # stored as seconds + 1 after the earliest
    assert T[u, i] == row["timestamp"] - offset
