"""A weighted sum of models' scores, each divided by a scale fitted on training data (the std of
its scores over a sample of users) so the weights are comparable. Weights are chosen on the
validation split by the evaluation (see recommender.select)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from recommender.models.base import Recommender

__all__ = ["Blend"]


class Blend(Recommender):
    kind = "blend"

    def __init__(self, models: list[Recommender], weights: list[float]):
        self.models, self.weights = models, [float(w) for w in weights]
        self.history_based = all(m.history_based for m in models)

    def fit(self, X: sp.csr_matrix, X_val: sp.csr_matrix | None = None, **kw) -> Blend:
        for m in self.models:
            if not hasattr(m, "to_tensors") or not _fitted(m):
                m.fit(X, X_val=X_val, **kw)
        return self.fit_scales(X)

    def fit_scales(self, X: sp.csr_matrix, n: int = 256) -> Blend:
        rows = np.linspace(0, X.shape[0] - 1, min(n, X.shape[0])).astype(int)
        self.scales_ = [float(m.scores(X[rows], rows).std().clamp_min(1e-9))
                        for m in self.models]
        return self

    def scores(self, rows, user_idx) -> torch.Tensor:
        out = None
        for m, w, s in zip(self.models, self.weights, self.scales_, strict=True):
            if w == 0:
                continue
            part = m.scores(rows, user_idx) * (w / s)
            out = part if out is None else out + part
        return out

    def user_vectors(self, rows, user_idx) -> torch.Tensor:
        return torch.cat([m.user_vectors(rows, user_idx) * (w / s) for m, w, s in
                          zip(self.models, self.weights, self.scales_, strict=True)], dim=1)

    def item_vectors(self) -> torch.Tensor:
        return torch.cat([m.item_vectors() for m in self.models], dim=1)

    def similar_vectors(self, item_idx):
        return self.models[0].similar_vectors(item_idx)  # the first (strongest) model's notion

    def get_config(self):
        return {"weights": self.weights, "scales": self.scales_,
                "models": [{"kind": m.kind, "config": m.get_config()} for m in self.models]}

    def to_tensors(self):
        return {f"m{k}.{name}": t for k, m in enumerate(self.models)
                for name, t in m.to_tensors().items()}

    @classmethod
    def from_tensors(cls, config, tensors):
        from recommender.models import model_class

        parts = []
        for k, spec in enumerate(config["models"]):
            sub = {n.split(".", 1)[1]: t for n, t in tensors.items() if n.startswith(f"m{k}.")}
            parts.append(model_class(spec["kind"]).from_tensors(spec["config"], sub))
        b = cls(parts, config["weights"])
        b.scales_ = list(config["scales"])
        return b


def _fitted(m: Recommender) -> bool:
    return any(a.endswith("_") and not a.startswith("_") for a in vars(m))
