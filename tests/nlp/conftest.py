from __future__ import annotations

import pytest

from common.registry import get_vertical


@pytest.fixture(scope="session")
def sentiment_root(tmp_path_factory):
    """A bundle store holding a tiny-BERT sentiment bundle (test preset, embedded data)."""
    root = tmp_path_factory.mktemp("nlp-sentiment")
    get_vertical("nlp-sentiment").train_default(root, preset="test")
    return root


@pytest.fixture(scope="session")
def translation_root(tmp_path_factory):
    """A bundle store holding a tiny Marian en→de bundle (test preset, embedded phrases)."""
    root = tmp_path_factory.mktemp("nlp-translation")
    get_vertical("nlp-translation").train_default(root, preset="test")
    return root


@pytest.fixture(scope="session")
def sentiment(sentiment_root):
    from nlp.sentiment_predictor import SentimentPredictor

    return SentimentPredictor.load("latest", root=sentiment_root)


@pytest.fixture(scope="session")
def translator(translation_root):
    from nlp.translation_predictor import TranslationPredictor

    return TranslationPredictor.load("latest", root=translation_root)
