"""Item-kNN (SAR-like): item-item similarity from co-occurrence counts (Jaccard, as SAR's
default, or cosine), pruned to each item's `neighbors` strongest, scores = X_u · S.
Trains in well under a second on ML-100K (one sparse XᵀX)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from recommender.models.base import Recommender, csr_to_torch

__all__ = ["ItemKNN"]


class ItemKNN(Recommender):
    kind = "itemknn"

    def __init__(self, similarity: str = "jaccard", neighbors: int = 100):
        if similarity not in ("jaccard", "cosine"):
            raise ValueError("similarity must be 'jaccard' or 'cosine'")
        self.similarity = similarity
        self.neighbors = neighbors

    def fit(self, X: sp.csr_matrix, **kw) -> ItemKNN:
        c = torch.from_numpy((X.T @ X).toarray().astype(np.float32))
        d = c.diagonal().clone()
        if self.similarity == "jaccard":
            s = c / (d[:, None] + d[None, :] - c).clamp_min(1e-9)
        else:
            s = c / (d[:, None].sqrt() * d[None, :].sqrt()).clamp_min(1e-9)
        s.fill_diagonal_(0.0)
        k = min(self.neighbors, s.shape[0])
        top = torch.topk(s, k, dim=1)  # keep each item's k nearest: denoises the long tail
        self.S_ = torch.zeros_like(s).scatter_(1, top.indices, top.values)
        return self

    def user_vectors(self, rows, user_idx) -> torch.Tensor:
        if not rows.nnz:
            return torch.zeros(rows.shape[0], self.S_.shape[0])
        return csr_to_torch(rows) @ self.S_

    def item_vectors(self) -> torch.Tensor:
        return torch.eye(self.S_.shape[0])

    def scores(self, rows, user_idx) -> torch.Tensor:
        return self.user_vectors(rows, user_idx)

    def similar_vectors(self, item_idx):
        return self.S_[torch.as_tensor(item_idx, dtype=torch.long)], torch.eye(self.S_.shape[0])

    def get_config(self):
        return {"similarity": self.similarity, "neighbors": self.neighbors}

    def to_tensors(self):
        return {"S": self.S_}

    @classmethod
    def from_tensors(cls, config, tensors):
        m = cls(**config)
        m.S_ = tensors["S"].float()
        return m
