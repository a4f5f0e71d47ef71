"""Exact top-K vs faiss (same API, recall check), the seen-filter, padding."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from recommender.retrieval import FaissIndex, exact_topk, mask_seen


def test_seen_items_never_returned():
    scores = torch.arange(12, dtype=torch.float32).reshape(2, 6)
    seen = sp.csr_matrix(np.array([[0, 0, 0, 0, 1, 1], [1, 0, 0, 0, 0, 1]], dtype=np.float32))
    idx, val = exact_topk(scores, 3, seen)
    assert idx.tolist() == [[3, 2, 1], [4, 3, 2]]
    assert np.all(np.isfinite(val))


def test_fewer_unseen_items_than_k_are_padded():
    seen = sp.csr_matrix(np.array([[1, 1, 0]], dtype=np.float32))
    idx, val = exact_topk(torch.ones(1, 3), 5, seen)
    assert idx.tolist() == [[2, -1, -1, -1, -1]] and np.isinf(val[0, 1:]).all()


def test_mask_seen_without_seen_is_identity():
    s = torch.randn(2, 4)
    assert torch.equal(mask_seen(s.clone(), None), s)


def test_faiss_matches_exact_flat_and_recall_of_hnsw():
    g = torch.Generator().manual_seed(0)
    items, users = torch.randn(3000, 32, generator=g), torch.randn(50, 32, generator=g)
    rng = np.random.default_rng(0)
    seen = sp.random(50, 3000, density=0.01, random_state=1, format="csr", dtype=np.float32)
    seen.data[:] = 1
    ex_i, ex_v = exact_topk(users @ items.T, 10, seen)
    flat_i, flat_v = FaissIndex(items, flat_below=10**9).search(users, 10, seen)
    assert (flat_i == ex_i).mean() > 0.99  # flat IP is exact up to float ties
    hnsw_i, _ = FaissIndex(items, flat_below=0).search(users, 10, seen)  # force the ANN index
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(hnsw_i, ex_i, strict=True)])
    assert recall >= 0.95
    for r in range(50):  # the seen-filter holds on the ANN path too
        assert not set(hnsw_i[r]) & set(seen[r].indices)
    del rng
