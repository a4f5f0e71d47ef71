"""Matrix factorisation trained with the BPR pairwise loss (Rendle et al. 2009), through the
shared Trainer: x_ui = p_u·q_i + b_i, one uniformly sampled negative per observed pair, L2 on the
embeddings of the batch. Scores are an inner product, so retrieval can use faiss."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from common.train import TrainConfig
from recommender.models.base import Recommender
from recommender.models.neural import bpr_loss, fit_with_trainer

__all__ = ["BPR", "MFNet"]


class MFNet(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int):
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        self.bias = nn.Embedding(n_items, 1)
        nn.init.normal_(self.user.weight, std=0.1)
        nn.init.normal_(self.item.weight, std=0.1)
        nn.init.zeros_(self.bias.weight)

    def score(self, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return (self.user(u) * self.item(i)).sum(-1) + self.bias(i).squeeze(-1)

    def full_scores(self, u: torch.Tensor) -> torch.Tensor:
        return self.user(u) @ self.item.weight.T + self.bias.weight.T


class BPR(Recommender):
    kind = "bpr"
    history_based = False

    def __init__(self, dim: int = 64, epochs: int = 40, lr: float = 5e-3, reg: float = 1e-4,
                 batch_size: int = 2048, seed: int = 0, patience: int = 5):
        self.dim, self.epochs, self.lr, self.reg = dim, epochs, lr, reg
        self.batch_size, self.seed, self.patience = batch_size, seed, patience

    def fit(self, X: sp.csr_matrix, X_val: sp.csr_matrix | None = None, **kw: Any) -> BPR:
        torch.manual_seed(self.seed)
        net = MFNet(X.shape[0], X.shape[1], self.dim)
        n_items, reg = X.shape[1], self.reg

        def step(model: MFNet, batch) -> dict[str, torch.Tensor]:
            u, i = batch
            j = torch.randint(0, n_items, i.shape, device=i.device)
            loss = bpr_loss(model.score(u, i), model.score(u, j))
            l2 = (model.user(u).pow(2).sum() + model.item(i).pow(2).sum()
                  + model.item(j).pow(2).sum()) / len(u)
            return {"loss": loss + reg * l2, "bpr": loss.detach()}

        self._train(net, X, step, X_val)
        self.P_ = net.user.weight.detach().cpu().clone()
        self.Q_ = net.item.weight.detach().cpu().clone()
        self.b_ = net.bias.weight.detach().cpu().clone().squeeze(-1)
        return self

    def user_vectors(self, rows, user_idx) -> torch.Tensor:
        idx = torch.as_tensor(np.asarray(user_idx), dtype=torch.long)
        known = idx >= 0
        out = torch.zeros(len(idx), self.P_.shape[1] + 1)
        out[known, :-1] = self.P_[idx[known]]
        out[known, -1] = 1.0  # picks up the item bias
        return out

    def item_vectors(self) -> torch.Tensor:
        return torch.cat([self.Q_, self.b_[:, None]], dim=1)

    def similar_vectors(self, item_idx):
        q = torch.nn.functional.normalize(self.Q_, dim=1)  # cosine between item factors
        return q[torch.as_tensor(item_idx, dtype=torch.long)], q

    def get_config(self):
        return {"dim": self.dim, "epochs": self.epochs, "lr": self.lr, "reg": self.reg,
                "batch_size": self.batch_size, "seed": self.seed, "patience": self.patience}

    def to_tensors(self):
        return {"P": self.P_, "Q": self.Q_, "b": self.b_}

    @classmethod
    def from_tensors(cls, config, tensors):
        m = cls(**config)
        m.P_, m.Q_, m.b_ = tensors["P"].float(), tensors["Q"].float(), tensors["b"].float()
        return m

    def _train(self, net: nn.Module, X: sp.csr_matrix, step, X_val: sp.csr_matrix | None) -> None:
        """One shared Trainer run for the pairwise models (BPR-MF and LightGCN): Adam, early
        stopping on validation NDCG@10 when a validation split is given."""
        cfg = TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                          optimizer="adam", seed=self.seed,
                          patience=self.patience if X_val is not None else None,
                          eval_batch_size=4096, progress=False)
        self.train_result_ = fit_with_trainer(
            net, X, step, lambda m, u: m.full_scores(u), cfg, X_val)
        net.eval()
