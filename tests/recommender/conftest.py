from __future__ import annotations

import pytest

from recommender.data import encode, synthetic_interactions


@pytest.fixture(scope="session")
def small_df():
    return synthetic_interactions(n_users=120, n_items=80, per_user=15, seed=1)


@pytest.fixture(scope="session")
def small_matrix(small_df):
    enc = encode(small_df)
    return enc, enc.matrix(small_df)


@pytest.fixture(scope="session")
def bundle_root(tmp_path_factory):
    from recommender.vertical import RecommenderVertical

    root = tmp_path_factory.mktemp("rec-bundles")
    RecommenderVertical().train_default(root, preset="test")
    return root
