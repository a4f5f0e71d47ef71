"""Fitting: XGBoost on the feature matrix, and the two nets through the shared Trainer.

    model = fit_xgb(x_train, y_train, params)
    net, scaler = fit_mlp(x_train, y_train, x_val, y_val)               # common.train.Trainer
    idx = sequence_index(df["CUSTOMER_ID"].to_numpy(), k=5)             # last k rows per card
    gru, scaler = fit_gru(x_all, idx, train_rows, y_train, val_rows, y_val)
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from common import metrics as M
from common.train import TrainConfig, Trainer
from fraud_detection.model import FeedForward, SequenceGRU, Standardizer, make_xgb

__all__ = ["fit_xgb", "fit_mlp", "fit_gru", "predict_logits", "sequence_index", "logit"]
log = logging.getLogger(__name__)


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def fit_xgb(
    x: np.ndarray, y: np.ndarray, params: dict[str, Any] | None = None, seed: int = 0,
    n_jobs: int = 1,
):
    """XGBoost on the natural class balance (see model.py for why no re-weighting)."""
    return make_xgb(params, seed=seed, n_jobs=n_jobs).fit(x, y)


def sequence_index(customer: np.ndarray, k: int) -> np.ndarray:
    """(n, k) row indices of each row's card history, oldest first, the row itself last; -1
    pads cards with fewer than k earlier rows. Rows must be sorted by (time, id)."""
    n = len(customer)
    order = np.lexsort((np.arange(n), customer))
    g = customer[order]
    out = np.full((n, k), -1, np.int64)
    for lag in range(k):  # k steps, each vectorised over all rows
        src = np.arange(n) - lag
        ok = src >= 0
        ok[ok] &= g[src[ok]] == g[ok]
        col = np.where(ok, order[np.clip(src, 0, None)], -1)
        out[order, k - 1 - lag] = col
    return out


def _pos_weight(y: np.ndarray) -> float:
    """A tenth of the negative/positive ratio (capped at 20): frauds weigh ~12x at 0.8 %,
    enough for a useful gradient without the full ratio's noisy, overconfident fits."""
    return float(min(20.0, (len(y) - y.sum()) / max(y.sum(), 1) / 10))


def _bce(pos_weight: float):
    pw = torch.tensor(pos_weight)

    def step(model, batch):
        *inputs, y = batch
        return torch.nn.functional.binary_cross_entropy_with_logits(
            model(*inputs), y, pos_weight=pw.to(y.device)
        )

    return step


def _ap_eval(model, loader) -> dict[str, float]:
    ys, zs = [], []
    for batch in loader:
        *inputs, y = batch
        zs.append(model(*inputs).float().cpu())
        ys.append(y.cpu())
    return {"val_ap": M.average_precision(torch.cat(ys).numpy(), torch.cat(zs).numpy())}


def _config(preset: dict[str, Any] | None, seed: int) -> TrainConfig:
    base = dict(epochs=8, batch_size=512, lr=2e-3, weight_decay=1e-4, warmup_ratio=0.05,
                monitor="val_ap", mode="max", patience=3, seed=seed, device="cpu",
                progress=False)
    return TrainConfig(**{**base, **(preset or {})})


def fit_mlp(
    x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, seed: int = 0,
    train_cfg: dict[str, Any] | None = None, hidden: int = 128,
) -> tuple[FeedForward, Standardizer]:
    """Feed-forward net; early-stopped on validation average precision."""
    scaler = Standardizer().fit(x)
    torch.manual_seed(seed)
    net = FeedForward(x.shape[1], hidden=hidden)
    pos_weight = _pos_weight(y)
    tr = TensorDataset(torch.from_numpy(scaler.transform(x)), torch.tensor(y, dtype=torch.float32))
    va = TensorDataset(torch.from_numpy(scaler.transform(x_val)),
                       torch.tensor(y_val, dtype=torch.float32))
    Trainer(net, _config(train_cfg, seed), step_fn=_bce(pos_weight), eval_fn=_ap_eval).fit(tr, va)
    return net.eval(), scaler


def _seq_tensors(x_all: np.ndarray, idx: np.ndarray, scaler: Standardizer):
    z = scaler.transform(x_all)
    z = np.concatenate([z, np.zeros((1, z.shape[1]), np.float32)])  # row -1 → zeros
    return torch.from_numpy(z[idx]), torch.from_numpy((idx >= 0).astype(np.float32))


def fit_gru(
    x_all: np.ndarray, idx: np.ndarray, train_rows: np.ndarray, y: np.ndarray,
    val_rows: np.ndarray, y_val: np.ndarray, seed: int = 0,
    train_cfg: dict[str, Any] | None = None,
) -> tuple[SequenceGRU, Standardizer]:
    """GRU over the card's last k transactions (idx from `sequence_index` over x_all)."""
    scaler = Standardizer().fit(x_all[train_rows])
    torch.manual_seed(seed)
    net = SequenceGRU(x_all.shape[1])
    pos_weight = _pos_weight(y)
    s_tr, m_tr = _seq_tensors(x_all, idx[train_rows], scaler)
    s_va, m_va = _seq_tensors(x_all, idx[val_rows], scaler)
    tr = TensorDataset(s_tr, m_tr, torch.tensor(y, dtype=torch.float32))
    va = TensorDataset(s_va, m_va, torch.tensor(y_val, dtype=torch.float32))
    Trainer(net, _config(train_cfg, seed), step_fn=_bce(pos_weight), eval_fn=_ap_eval).fit(tr, va)
    return net.eval(), scaler


@torch.no_grad()
def predict_logits(net: torch.nn.Module, scaler: Standardizer, x: np.ndarray,
                   idx: np.ndarray | None = None) -> np.ndarray:
    """Raw logits of a fitted net (FeedForward on x, or SequenceGRU on x_all[idx])."""
    net.eval()
    if idx is None:
        return net(torch.from_numpy(scaler.transform(x))).double().numpy()
    out = []
    for s in range(0, len(idx), 8192):
        seq, mask = _seq_tensors(x, idx[s : s + 8192], scaler)
        out.append(net(seq, mask).double().numpy())
    return np.concatenate(out) if out else np.zeros(0)
