"""Evaluation protocols: no leakage into test candidates, report shape, any dataset format."""

from __future__ import annotations

import json

import numpy as np
import pytest

from common.cli import main
from recommender.data import encode, leave_last_out_split, stratified_split
from recommender.evaluate import run_protocol, split_for
from recommender.select import (
    VALIDATION_SEEDS,
    Fold,
    fit_spec,
    score_model,
    stratified_folds,
    topk_all,
)


def test_test_candidates_exclude_training_and_validation_items(small_df):
    train, test = split_for("stratified", small_df)
    sub, val = split_for("stratified", train, seed=VALIDATION_SEEDS[0])
    enc = encode(train)
    X = enc.matrix(train)
    # the validation rows are part of the training part, so the test-time filter covers them
    assert len(sub) + len(val) == len(train)
    model = fit_spec({"kind": "ease", "config": {"l2": 20.0}}, X)
    users = np.arange(enc.n_users)
    top = topk_all(model, X, users, k=10)
    for u in users:
        history = set(X[u].indices) | set(enc.matrix(val)[u].indices)
        assert not history & set(top[u][top[u] >= 0]), f"user {u}: train/val item in top-k"


def test_leave_last_out_test_item_is_not_filtered_and_train_items_are(small_df):
    train, test = leave_last_out_split(small_df)
    enc = encode(train)
    X, X_test = enc.matrix(train), enc.matrix(test)
    model = fit_spec({"kind": "itemknn", "config": {"neighbors": 20}}, X)
    top = topk_all(model, X, np.arange(enc.n_users), k=enc.n_items)
    for u in range(enc.n_users):
        got = set(top[u][top[u] >= 0])
        assert not got & set(X[u].indices)
        assert set(X_test[u].indices) <= got  # full ranking: the held-out item is rankable


@pytest.mark.slow
def test_run_protocol_reports_baselines_and_selection(small_df):
    res = run_protocol(small_df, "stratified", preset="test")
    assert "popularity" in res["baselines"] and "ease" in res["baselines"]
    run = res["runs"][0]
    for key in ("precision_at_10", "recall_at_10", "ndcg_at_10", "map_at_10", "map",
                "train_time_s", "recommend_time_s"):
        assert key in run
    assert run["ndcg_at_10"] > res["baselines"]["popularity"]["ndcg_at_10"]
    assert res["validation"], "validation table recorded"


@pytest.mark.slow
def test_cli_evaluate_on_a_csv_with_mapped_columns(small_df, tmp_path):
    path = tmp_path / "events.csv"
    small_df.rename(columns={"user_id": "visitor", "item_id": "sku"}).to_csv(path, index=False)
    out = tmp_path / "report.json"
    rc = main(["evaluate", "recommender", "--protocol", "leave-last-out", "--data", str(path),
               "--out", str(out), "--user-col", "visitor", "--item-col", "sku",
               "--grid", "test", "--root", str(tmp_path / "b")])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["protocol"] == "leave-last-out" and report["vertical"] == "recommender"
    assert {"hr_at_10", "ndcg_at_10"} <= set(report["metrics"])
    assert "popularity" in report["baselines"]
    assert report["per_seed"] and report["config"]["selected_model"]


def test_stratified_split_is_the_protocol_split(small_df):
    a = split_for("stratified", small_df)[0]
    b = stratified_split(small_df, 0.75, "item", 42)[0]
    assert a.index.equals(b.index)


@pytest.mark.slow
def test_blend_and_weights_are_chosen_from_the_validation_table(small_df):
    from recommender.select import _name, select

    train, _ = split_for("stratified", small_df)
    sub, val = split_for("stratified", train, seed=VALIDATION_SEEDS[0])
    enc = encode(train)
    winner, table, best = select(Fold(enc.matrix(sub), enc.matrix(val), enc.times(sub)),
                                 "test")
    # the winner is the validation table's best row (a single model or a greedy blend)
    top = max(table, key=lambda r: r["ndcg_at_10"])
    assert _name(winner) == top["model"]
    assert {"ease_time", "rp3beta", "popularity"} <= set(best)
    if winner["kind"] == "blend":
        assert sum(winner["weights"]) == pytest.approx(1.0)
        assert len(winner["parts"]) <= 3


def test_folds_are_distinct_splits_of_the_training_part_only(small_df):
    train, test = split_for("stratified", small_df)
    enc = encode(train)
    folds = stratified_folds(train, enc, "quick")
    assert len(folds) == 3 and len(stratified_folds(train, enc, "demo")) == 1
    X = enc.matrix(train)
    for f in folds:  # each fold partitions the training part, test rows never enter
        assert (f.X_sub + f.X_val - X).count_nonzero() == 0
        assert f.X_sub.multiply(f.X_val).nnz == 0
    assert (folds[0].X_val != folds[1].X_val).nnz > 0


def test_selection_ranks_by_the_mean_over_folds(small_df):
    from recommender.select import _name, select

    train, _ = split_for("stratified", small_df)
    enc = encode(train)
    folds = stratified_folds(train, enc, "quick")
    winner, table, _ = select(folds, "test", blend=False)
    row = next(r for r in table if r["model"] == "ease(l2=30.0)")
    per = [score_model(fit_spec({"kind": "ease", "config": {"l2": 30.0}}, f.X_sub),
                       f.X_sub, f.X_val)["ndcg_at_10"] for f in folds]
    assert row["ndcg_at_10_folds"] == pytest.approx(per, abs=1e-5)
    assert row["ndcg_at_10"] == pytest.approx(np.mean(per), abs=1e-5)
    assert _name(winner) == max(table, key=lambda r: r["ndcg_at_10"])["model"]
