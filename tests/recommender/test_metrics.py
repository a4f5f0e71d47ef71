"""Vectorised ranking metrics: hand-computed cases and equality with common.metrics."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from common.metrics import (
    average_precision_at_k,
    hit_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)
from recommender.metrics import ranking_metrics


def rel_matrix(sets, n_items):
    rows = [r for r, s in enumerate(sets) for _ in s]
    cols = [c for s in sets for c in sorted(s)]
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(sets), n_items))


def test_hand_computed_case():
    # ranked [0, 1, 2, 3], relevant {1, 3, 9}; k = 4: hits at ranks 2 and 4
    m = ranking_metrics(np.array([[0, 1, 2, 3]]), rel_matrix([{1, 3, 9}], 10), k=4)
    assert m["precision_at_4"] == pytest.approx(2 / 4)
    assert m["recall_at_4"] == pytest.approx(2 / 3)
    dcg = 1 / np.log2(3) + 1 / np.log2(5)
    idcg = 1 + 1 / np.log2(3) + 1 / np.log2(4)
    assert m["ndcg_at_4"] == pytest.approx(dcg / idcg)
    # AP numerator: P@2 + P@4 = 1/2 + 2/4 = 1; min(k, |rel|) = 3; MS's `map` divides by |rel|=3
    assert m["map_at_4"] == pytest.approx(1 / 3)
    assert m["map"] == pytest.approx(1 / 3)
    assert m["hr_at_4"] == 1.0


def test_map_denominator_is_min_k_and_relevant():
    # 5 relevant items, k = 2, both top-2 hits: AP@2 = (1 + 1) / min(2, 5) = 1, `map` = 2 / 5
    m = ranking_metrics(np.array([[4, 3]]), rel_matrix([{0, 1, 2, 3, 4}], 6), k=2)
    assert m["map_at_2"] == pytest.approx(1.0)
    assert m["map"] == pytest.approx(2 / 5)
    assert average_precision_at_k([4, 3], {0, 1, 2, 3, 4}, 2) == pytest.approx(1.0)


def test_n_relevant_override_counts_unrankable_items():
    m = ranking_metrics(np.array([[0, 1]]), rel_matrix([{0}], 3), k=2, n_relevant=np.array([4]))
    assert m["recall_at_2"] == pytest.approx(1 / 4)
    assert m["precision_at_2"] == pytest.approx(1 / 2)


def test_users_without_relevant_items_are_skipped():
    m = ranking_metrics(np.array([[0, 1], [1, 2]]), rel_matrix([{0}, set()], 3), k=2)
    assert m["n_users"] == 1 and m["precision_at_2"] == pytest.approx(0.5)


def test_equal_to_common_metrics_on_random_cases():
    rng = np.random.default_rng(0)
    n_items, k = 50, 10
    tops, sets = [], []
    for _ in range(200):
        tops.append(rng.choice(n_items, size=k, replace=False))
        sets.append(set(rng.choice(n_items, size=int(rng.integers(1, 20)), replace=False)))
    m = ranking_metrics(np.array(tops), rel_matrix(sets, n_items), k=k)
    pairs = [(list(t), s) for t, s in zip(tops, sets, strict=True)]
    ref = {
        "precision_at_10": np.mean([precision_at_k(t, s, k) for t, s in pairs]),
        "recall_at_10": np.mean([recall_at_k(t, s, k) for t, s in pairs]),
        "ndcg_at_10": np.mean([ndcg_at_k(t, s, k) for t, s in pairs]),
        "map_at_10": np.mean([average_precision_at_k(t, s, k) for t, s in pairs]),
        "hr_at_10": np.mean([hit_at_k(t, s, k) for t, s in pairs]),
    }
    for name, value in ref.items():
        assert m[name] == pytest.approx(value, abs=1e-12), name
