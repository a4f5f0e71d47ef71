"""Post-hoc calibration fitted on a validation split: temperature scaling for softmax/sigmoid
logits (Guo et al. 2017), shared by medical imaging and NLP."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["fit_temperature", "apply_temperature"]


def fit_temperature(logits: np.ndarray, labels: np.ndarray, multilabel: bool = False) -> float:
    """The T > 0 minimising validation NLL of softmax(logits / T) (sigmoid if multilabel).

    Binary models with one logit column are treated as sigmoid. Optimised on log T with LBFGS.
    """
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels))
    sigmoid = multilabel or z.ndim == 1 or z.shape[1] == 1
    if sigmoid:
        z = z.reshape(len(z), -1)
        y = y.reshape(z.shape).to(torch.float64)
    else:
        y = y.reshape(-1).long()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        scaled = z / log_t.exp()
        if sigmoid:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(scaled, y)
        else:
            loss = torch.nn.functional.cross_entropy(scaled, y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.exp().item())
    return t if np.isfinite(t) and t > 0 else 1.0


def apply_temperature(logits: np.ndarray, temperature: float, multilabel: bool = False):
    """Calibrated probabilities from logits."""
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64) / temperature
    if multilabel or z.ndim == 1 or z.shape[-1] == 1:
        return torch.sigmoid(z).numpy()
    return torch.softmax(z, dim=-1).numpy()
