"""Models: they learn the synthetic structure, round-trip through tensors, and the neural ones
train through the shared Trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recommender.data import encode, stratified_split
from recommender.models import BPR, EASE, Blend, ItemKNN, LightGCN, Popularity, load_model
from recommender.select import score_model

pytestmark = pytest.mark.slow  # trains models / a bundle (seconds each)


@pytest.fixture(scope="module")
def split(small_df):
    enc = encode(small_df)
    train, test = stratified_split(small_df, seed=42)
    return enc.matrix(train), enc.matrix(test)


def fitted(kind, X):
    if kind == "bpr":
        return BPR(dim=8, epochs=40, lr=0.02, reg=1e-2, batch_size=128).fit(X)
    if kind == "lightgcn":
        return LightGCN(dim=16, layers=2, epochs=6, lr=0.02, batch_size=256).fit(X)
    return {"popularity": Popularity(), "itemknn": ItemKNN(neighbors=30),
            "ease": EASE(l2=20.0)}[kind].fit(X)


@pytest.mark.parametrize("kind", ["itemknn", "ease", "bpr", "lightgcn"])
def test_models_beat_popularity_on_structured_data(kind, split):
    X, X_test = split
    pop = score_model(Popularity().fit(X), X, X_test)["ndcg_at_10"]
    assert score_model(fitted(kind, X), X, X_test)["ndcg_at_10"] > pop


@pytest.mark.parametrize("kind", ["popularity", "itemknn", "ease", "bpr", "lightgcn"])
def test_tensor_round_trip_gives_identical_scores(kind, split):
    X, _ = split
    m = fitted(kind, X)
    again = load_model(m.kind, m.get_config(), {k: v.clone() for k, v in m.to_tensors().items()})
    users = np.arange(10)
    assert torch.equal(m.scores(X[users], users), again.scores(X[users], users))


def test_blend_round_trip_and_weighting(split):
    X, _ = split
    parts = [EASE(l2=20.0).fit(X), Popularity().fit(X)]
    b = Blend(parts, [0.7, 0.3]).fit_scales(X)
    users = np.arange(5)
    manual = (parts[0].scores(X[users], users) * 0.7 / b.scales_[0]
              + parts[1].scores(X[users], users) * 0.3 / b.scales_[1])
    assert torch.allclose(b.scores(X[users], users), manual)
    again = load_model("blend", b.get_config(), b.to_tensors())
    assert torch.allclose(again.scores(X[users], users), manual)
    # the concatenated vectors give the same scores (so faiss can serve blends too)
    vec = b.user_vectors(X[users], users) @ b.item_vectors().T
    assert torch.allclose(vec, manual, atol=1e-4)


def test_ease_closed_form_constraint(split):
    X, _ = split
    B = EASE(l2=10.0).fit(X).B_
    assert torch.count_nonzero(torch.diagonal(B)) == 0
    G = torch.from_numpy((X.T @ X).toarray()).double()
    # the EASE optimality condition off the diagonal: (G + λI)B = G - diag(μ)
    R = (G + 10.0 * torch.eye(len(G))) @ B.double() - G
    off = R - torch.diag(torch.diagonal(R))
    assert off.abs().max() < 1e-3


def test_neural_models_use_the_shared_trainer_and_early_stop(split):
    X, X_test = split
    m = BPR(dim=8, epochs=4, lr=0.02, batch_size=256).fit(X, X_val=X_test)
    res = m.train_result_
    assert res.epochs_run >= 1 and res.best_epoch is not None
    assert "val_ndcg_at_10" in res.history[0]


def test_empty_history_users_score_zero_not_crash(split):
    X, _ = split
    empty = X[:2].copy()
    empty.data[:] = 0
    empty.eliminate_zeros()
    for m in (EASE(l2=20.0).fit(X), ItemKNN().fit(X)):
        assert torch.all(m.scores(empty, np.array([-1, -1])) == 0)
    bpr = fitted("bpr", X)
    assert torch.all(bpr.user_vectors(empty, np.array([-1, -1])) == 0)
