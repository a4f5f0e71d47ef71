"""The interface every recommender model follows (scikit-learn style: `fit` returns self, fitted
state ends in `_`). Scores are always `user_vectors(...) @ item_vectors().T`, so one retrieval
path (one batched matrix product, or a faiss index) serves every model and blends of models."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["Recommender", "csr_to_torch"]


def csr_to_torch(x: sp.csr_matrix) -> torch.Tensor:
    """A scipy CSR as a torch sparse CSR float32 tensor (no densification)."""
    x = x.tocsr()
    with warnings.catch_warnings():  # "sparse CSR support is in beta": it is what we need
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(x.indptr.astype(np.int64)),
            torch.from_numpy(x.indices.astype(np.int64)),
            torch.from_numpy(x.data.astype(np.float32)),
            size=x.shape,
        )


class Recommender:
    """Base class. `history_based` models score any user from their interaction rows (so new
    events change their scores at once); the others need the user's training index."""

    kind: ClassVar[str]
    history_based: ClassVar[bool] = True

    def fit(self, X: sp.csr_matrix, **kw: Any) -> Recommender:
        raise NotImplementedError

    def user_vectors(self, rows: sp.csr_matrix, user_idx: np.ndarray) -> torch.Tensor:
        """(n, d) query vectors from users' history rows (n × items) or training indices."""
        raise NotImplementedError

    def item_vectors(self) -> torch.Tensor:
        """(n_items, d) item vectors; score = user_vectors @ item_vectors.T."""
        raise NotImplementedError

    def scores(self, rows: sp.csr_matrix, user_idx: np.ndarray) -> torch.Tensor:
        return self.user_vectors(rows, user_idx) @ self.item_vectors().T

    def similar_vectors(self, item_idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(queries, items) whose product ranks items like each of `item_idx`. Default: the
        scores of a user whose history is that one item (item-to-item model output)."""
        n, m = len(item_idx), self.item_vectors().shape[0]
        rows = sp.csr_matrix((np.ones(n, np.float32), (np.arange(n), item_idx)), shape=(n, m))
        return self.user_vectors(rows, np.full(n, -1)), self.item_vectors()

    # ---- bundle round-trip ---------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        return {}

    def to_tensors(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @classmethod
    def from_tensors(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Recommender:
        raise NotImplementedError
