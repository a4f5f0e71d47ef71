"""Fixtures shared by several test folders."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session (its start costs seconds); actors find the test
    vertical through PYTHONPATH and the extra plugin."""
    import ray  # a missing Ray fails the test, never skips it

    if not ray.is_initialized():
        env = {"PYTHONPATH": str(ROOT), "VERTICALS_EXTRA_PLUGINS": "tests.common.toy_vertical",
               "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": env})
    yield ray
    ray.shutdown()
