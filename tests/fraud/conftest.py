from __future__ import annotations

import os

import pytest

from common.registry import get_vertical
from fraud_detection.data import SimConfig, simulate

REDIS_URL = os.environ.get("VERTICALS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def small_df():
    """~6k transactions over 50 days with all three fraud scenarios."""
    cfg = SimConfig(n_customers=120, n_terminals=200, n_days=50, compromised_terminals_per_day=1,
                    compromised_customers_per_day=1, start_date="2018-08-12")
    return simulate(cfg, seed=3)


@pytest.fixture(scope="session")
def fraud_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fraud-bundles")
    get_vertical("fraud").train_default(root, preset="test")
    return root


@pytest.fixture()
def redis_url():
    """A real Redis (db 15 by default); skipped when none answers, unless
    VERTICALS_REQUIRE_REDIS=1 (CI), where a missing server fails the test."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as e:
        if os.environ.get("VERTICALS_REQUIRE_REDIS") == "1":
            pytest.fail(f"Redis required (VERTICALS_REQUIRE_REDIS=1) but {REDIS_URL}: {e}")
        pytest.skip(f"no Redis at {REDIS_URL}")
    return REDIS_URL


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Small nets on a shared 2-core box: one intra-op thread avoids OpenMP spin contention.
    Restored afterwards so other test directories keep their setting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
