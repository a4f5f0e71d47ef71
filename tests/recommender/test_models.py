"""Models: they learn the synthetic structure, round-trip through tensors, and the neural ones
train through the shared Trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recommender.data import encode, stratified_split
from recommender.models import (
    BPR,
    EASE,
    Blend,
    ItemKNN,
    LightGCN,
    Popularity,
    RP3beta,
    TimeEASE,
    load_model,
)
from recommender.models.time_ease import time_gram
from recommender.select import score_model

pytestmark = pytest.mark.slow  # trains models / a bundle (seconds each)


@pytest.fixture(scope="module")
def split(small_df):
    enc = encode(small_df)
    train, test = stratified_split(small_df, seed=42)
    return enc.matrix(train), enc.matrix(test)


@pytest.fixture(scope="module")
def times(small_df):
    enc = encode(small_df)
    return enc.times(stratified_split(small_df, seed=42)[0])


def fitted(kind, X, T=None):
    if kind == "ease_time":
        return TimeEASE(l2=20.0, alpha=1.0, taus=(3600.0, 86400.0)).fit(X, T=T)
    if kind == "rp3beta":
        return RP3beta(alpha=0.8, beta=0.3).fit(X)
    if kind == "bpr":
        return BPR(dim=8, epochs=40, lr=0.02, reg=1e-2, batch_size=128).fit(X)
    if kind == "lightgcn":
        return LightGCN(dim=16, layers=2, epochs=6, lr=0.02, batch_size=256).fit(X)
    return {"popularity": Popularity(), "itemknn": ItemKNN(neighbors=30),
            "ease": EASE(l2=20.0)}[kind].fit(X)


@pytest.mark.parametrize("kind", ["itemknn", "rp3beta", "ease", "ease_time", "bpr", "lightgcn"])
def test_models_beat_popularity_on_structured_data(kind, split, times):
    X, X_test = split
    pop = score_model(Popularity().fit(X), X, X_test)
    got = score_model(fitted(kind, X, times), X, X_test)
    assert got["ndcg_at_10"] > pop["ndcg_at_10"]
    assert got["recall_at_10"] > pop["recall_at_10"]


@pytest.mark.parametrize("kind", ["popularity", "itemknn", "rp3beta", "ease", "ease_time", "bpr",
                                  "lightgcn"])
def test_tensor_round_trip_gives_identical_scores(kind, split, times):
    X, _ = split
    m = fitted(kind, X, times)
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


def test_time_gram_matches_a_hand_computed_case():
    # one user rated items 0 and 1 sixty seconds apart, item 2 an hour later; a second user
    # rated items 0 and 2 at the same second
    import scipy.sparse as sp

    T = sp.csr_matrix(np.array([[1.0, 61.0, 3601.0], [5.0, 0.0, 5.0]]))
    g = time_gram(T, 60.0)
    assert g[0, 1] == pytest.approx(np.exp(-1.0)) and g[1, 0] == g[0, 1]
    assert g[0, 2] == pytest.approx(np.exp(-60.0) + 1.0)
    assert g[1, 2] == pytest.approx(np.exp(-59.0))
    assert np.allclose(np.diag(g), [2.0, 1.0, 2.0])  # one per rating of the item


def test_time_ease_without_timestamps_is_ease(split, times):
    X, _ = split
    plain = EASE(l2=20.0).fit(X).B_
    assert torch.allclose(TimeEASE(l2=20.0).fit(X).B_, plain)
    assert torch.allclose(TimeEASE(l2=20.0, alpha=0.0).fit(X, T=times).B_, plain)
    # with timestamps the time term changes the weights
    assert not torch.allclose(TimeEASE(l2=20.0, alpha=1.0).fit(X, T=times).B_, plain)


def test_time_ease_uses_session_co_occurrence():
    """Every user rated items 0, 1 and 2 (equal co-occurrence), item 1 half a minute after
    item 0 and item 2 a month later: only the time-aware model ranks 1 above 2 for a user
    whose history is item 0."""
    import scipy.sparse as sp

    n = 40
    rows = np.repeat(np.arange(n), 3)
    cols = np.tile([0, 1, 2], n)
    ts = (1e7 * rows + np.tile([0.0, 30.0, 30 * 86400.0], n)) + 1.0
    X = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, 3))
    T = sp.csr_matrix((ts, (rows, cols)), shape=(n, 3))
    q = sp.csr_matrix((np.ones(1, np.float32), ([0], [0])), shape=(1, 3))
    plain = EASE(l2=1.0).fit(X).scores(q, np.array([-1]))[0]
    timed = TimeEASE(l2=1.0, alpha=1.0, taus=(60.0,)).fit(X, T=T).scores(q, np.array([-1]))[0]
    assert plain[1] == pytest.approx(plain[2])
    assert timed[1] > timed[2]


def test_rp3beta_popularity_penalty(split):
    X, _ = split
    pop = np.asarray(X.sum(axis=0)).ravel()
    head = np.argsort(-pop)[:10]

    def head_share(model):
        top = torch.topk(model.scores(X, np.arange(X.shape[0])), 10, dim=1).indices.numpy()
        return np.isin(top, head).mean()

    # a larger beta divides popular destinations out more: fewer head items recommended
    assert head_share(RP3beta(beta=0.8).fit(X)) < head_share(RP3beta(beta=0.0).fit(X))
