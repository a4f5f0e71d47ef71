"""The recommender gate: NDCG@10 of the served top-10 against held-out interactions."""

from __future__ import annotations

import numpy as np
import pytest

from common import metrics as M
from common.artifacts import load_bundle
from common.errors import InvalidInput
from common.registry import get_vertical
from recommender.data import synthetic_interactions
from recommender.predictor import RecommenderPredictor
from recommender.train import DEFAULT_SIZES, default_data


@pytest.fixture(scope="module")
def bundle(bundle_root):
    return load_bundle("latest", vertical="recommender", root=bundle_root)


@pytest.fixture(scope="module")
def held_out():
    """New draws from the training data's users and tastes (same seed, longer histories),
    minus what the bundle trained on, plus one user it never saw."""
    train = default_data("test")
    more = synthetic_interactions(**{**DEFAULT_SIZES["test"], "per_user": 40}, seed=0)
    pairs = set(zip(train["user_id"], train["item_id"], strict=True))
    keep = [(u, i) not in pairs for u, i in zip(more["user_id"], more["item_id"], strict=True)]
    held = more[keep].groupby("user_id").head(5)
    held.loc[held.index[:2], "user_id"] = "stranger"
    return held


def test_gate_scores_the_served_top10(bundle, held_out, tmp_path):
    rec = get_vertical("recommender")
    assert rec.gate_metric == "ndcg_at_10"
    path = tmp_path / "held.csv"
    held_out[["user_id", "item_id", "timestamp"]].to_csv(path, index=False)
    m = rec.gate_score(bundle, path, None)
    assert m["unknown_users"] == 1 and m["users"] == held_out["user_id"].nunique() - 1
    assert 0 < m["ndcg_at_10"] <= 1 and 0 < m["hr_at_10"] <= 1
    # the same figure user by user from the served answers and common.metrics
    pred = RecommenderPredictor.load(bundle.path)
    known = held_out[held_out["user_id"] != "stranger"]
    ndcg, hr = [], []
    for u, g in known.groupby("user_id"):
        ranked = [it.item_id for it in pred.run([pred.parse({"user_id": u, "k": 10})])[0].items]
        ndcg.append(M.ndcg_at_k(ranked, set(g["item_id"]), 10))
        hr.append(M.hit_at_k(ranked, set(g["item_id"]), 10))
    assert m["ndcg_at_10"] == pytest.approx(np.mean(ndcg))
    assert m["hr_at_10"] == pytest.approx(np.mean(hr))


@pytest.mark.parametrize("case, reason", [
    ("unknown_only", "none of its 2 users is known to the bundle"),
    ("no_item_column", "need user and item columns"),
    ("empty", "no interactions"),
    ("wrong_type", "unsupported interaction format"),
])
def test_unfitting_data_is_one_line(bundle, tmp_path, case, reason):
    path = tmp_path / "held.csv"
    rows = "user_id,item_id\nnobody,i1\nnoone,i2\n"
    if case == "no_item_column":
        rows = "user_id,when\nu1,3\n"
    elif case == "empty":
        rows = "user_id,item_id\n"
    elif case == "wrong_type":
        path = tmp_path / "held.xlsx"
    path.write_text(rows)
    with pytest.raises(InvalidInput) as e:
        get_vertical("recommender").gate_score(bundle, path, None)
    assert e.value.field == "data" and reason in e.value.reason and "\n" not in str(e.value)
