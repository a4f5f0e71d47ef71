"""Most-popular baseline: every user gets the items with most training interactions."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from recommender.models.base import Recommender

__all__ = ["Popularity"]


class Popularity(Recommender):
    kind = "popularity"

    def fit(self, X: sp.csr_matrix, **kw) -> Popularity:
        counts = np.asarray(X.sum(axis=0)).ravel().astype(np.float32)
        self.counts_ = torch.from_numpy(counts)
        return self

    def user_vectors(self, rows, user_idx) -> torch.Tensor:
        return torch.ones(len(user_idx), 1)

    def item_vectors(self) -> torch.Tensor:
        # log1p keeps the order and a sane scale when blended with other models
        return torch.log1p(self.counts_)[:, None]

    def similar_vectors(self, item_idx):
        return self.user_vectors(None, item_idx), self.item_vectors()

    def to_tensors(self):
        return {"counts": self.counts_}

    @classmethod
    def from_tensors(cls, config, tensors):
        m = cls()
        m.counts_ = tensors["counts"].float()
        return m
