"""Top-K retrieval with the seen-filter.

- exact: one batched matrix product (user vectors × item vectorsᵀ, or a model's own batched
  scores), seen items set to -inf from the users' CSR rows, `torch.topk`. Right for catalogues
  whose (batch × items) score block fits in memory — ML-100K's all-users top-10 is one product.
- faiss: an inner-product index over the item vectors (HNSW for large catalogues, flat below
  `flat_below` items); it over-fetches k + (most seen items in the batch) and drops seen ones,
  so the API and the seen-filter are the same as exact.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["mask_seen", "exact_topk", "FaissIndex"]


def mask_seen(scores: torch.Tensor, seen: sp.csr_matrix | None) -> torch.Tensor:
    """scores with every (row, seen item) set to -inf (in place; returns scores)."""
    if seen is None or not seen.nnz:
        return scores
    seen = seen.tocsr()
    rows = np.repeat(np.arange(seen.shape[0]), np.diff(seen.indptr))
    scores[torch.from_numpy(rows), torch.from_numpy(seen.indices.astype(np.int64))] = -np.inf
    return scores


def exact_topk(
    scores: torch.Tensor, k: int, seen: sp.csr_matrix | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(items, scores) of the top k per row after the seen-filter; rows with fewer than k
    unseen items are padded with -1 / -inf."""
    scores = mask_seen(scores.float().clone(), seen)
    kk = min(k, scores.shape[1])
    val, idx = torch.topk(scores, kk, dim=1)
    idx = idx.numpy().astype(np.int64)
    val = val.numpy()
    idx[~np.isfinite(val)] = -1
    if kk < k:
        pad = k - kk
        idx = np.pad(idx, ((0, 0), (0, pad)), constant_values=-1)
        val = np.pad(val, ((0, 0), (0, pad)), constant_values=-np.inf)
    return idx, val


class FaissIndex:
    """Inner-product ANN over item vectors with the same (items, scores) answer as exact."""

    def __init__(self, item_vectors: torch.Tensor, flat_below: int = 20_000, hnsw_m: int = 32,
                 ef_search: int = 256):
        import faiss  # optional at import time: only large catalogues need it

        v = np.ascontiguousarray(item_vectors.detach().cpu().numpy().astype(np.float32))
        self.n_items, d = v.shape
        if self.n_items < flat_below:
            self.index = faiss.IndexFlatIP(d)
        else:
            self.index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efSearch = ef_search
        self.index.add(v)

    def search(
        self, queries: torch.Tensor, k: int, seen: sp.csr_matrix | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(queries.detach().cpu().numpy().astype(np.float32))
        extra = int(np.diff(seen.tocsr().indptr).max()) if seen is not None and seen.nnz else 0
        fetch = min(self.n_items, k + extra)
        val, idx = self.index.search(q, fetch)
        out_i = np.full((len(q), k), -1, dtype=np.int64)
        out_v = np.full((len(q), k), -np.inf, dtype=np.float32)
        seen = seen.tocsr() if seen is not None else None
        for r in range(len(q)):
            keep = idx[r] >= 0
            if seen is not None:
                s = seen.indices[seen.indptr[r] : seen.indptr[r + 1]]
                keep &= ~np.isin(idx[r], s)
            ii, vv = idx[r][keep][:k], val[r][keep][:k]
            out_i[r, : len(ii)], out_v[r, : len(vv)] = ii, vv
        return out_i, out_v
