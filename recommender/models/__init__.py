"""Recommender models: popularity, item-kNN (SAR-like), RP3beta, EASE, time-aware EASE, BPR-MF,
LightGCN, and blends."""

from __future__ import annotations

from typing import Any

import torch

from recommender.models.base import Recommender
from recommender.models.blend import Blend
from recommender.models.bpr import BPR
from recommender.models.ease import EASE
from recommender.models.itemknn import ItemKNN
from recommender.models.lightgcn import LightGCN
from recommender.models.popularity import Popularity
from recommender.models.rp3beta import RP3beta
from recommender.models.time_ease import TimeEASE

__all__ = ["Recommender", "Popularity", "ItemKNN", "RP3beta", "EASE", "TimeEASE", "BPR",
           "LightGCN", "Blend",
           "model_class", "build_model", "load_model"]

_CLASSES: dict[str, type[Recommender]] = {
    c.kind: c for c in (Popularity, ItemKNN, RP3beta, EASE, TimeEASE, BPR, LightGCN, Blend)
}


def model_class(kind: str) -> type[Recommender]:
    if kind not in _CLASSES:
        raise ValueError(f"unknown model kind {kind!r}; known: {sorted(_CLASSES)}")
    return _CLASSES[kind]


def build_model(kind: str, **config: Any) -> Recommender:
    return model_class(kind)(**config)


def load_model(kind: str, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Recommender:
    """Rebuild a fitted model from its bundle tensors (no pickle)."""
    return model_class(kind).from_tensors(config, tensors)
