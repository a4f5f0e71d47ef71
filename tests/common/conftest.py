from __future__ import annotations

import pytest

import tests.common.toy_vertical  # noqa: F401  registers the "toy" vertical
from common.registry import get_vertical


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    get_vertical("toy").train_default(root)
    return root
