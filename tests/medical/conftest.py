"""Shared fixtures: one tiny bundle trained on the synthetic phantoms (preset 'test')."""

from __future__ import annotations

import pytest

from common.registry import get_vertical


@pytest.fixture(scope="session")
def medical_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("medical-bundles")
    get_vertical("medical").train_default(root, preset="test")
    return root


@pytest.fixture(scope="session")
def predictor(medical_root):
    from medical_imaging.predictor import MedicalPredictor

    return MedicalPredictor.load("latest", root=medical_root)
