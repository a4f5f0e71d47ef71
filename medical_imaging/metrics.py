"""Classification metrics exactly as MedMNIST v2 defines them (its `getAUC` / `getACC`), plus
expected calibration error, from logits and a temperature.

- binary: AUC of the last column's score, ACC at threshold 0.5 on that column;
- multi-class (and ordinal): mean one-vs-rest AUC over classes, ACC of the argmax;
- multi-label: mean AUC over labels, ACC = mean over labels of per-label accuracy at 0.5.
"""

from __future__ import annotations

import numpy as np

from common.calibration import apply_temperature
from common.metrics import accuracy, expected_calibration_error, roc_auc

__all__ = ["TASKS", "probabilities", "medmnist_auc_acc", "classification_metrics", "infer_task"]
TASKS = ("binary", "multiclass", "ordinal", "multilabel")


def infer_task(labels: np.ndarray) -> str:
    """Task type from a MedMNIST label array: (N, L>1) of 0/1 is multi-label, else by class
    count (ordinal cannot be told from labels: pass it explicitly)."""
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] > 1:
        return "multilabel"
    return "binary" if len(np.unique(y)) <= 2 else "multiclass"


def probabilities(task: str, logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Calibrated (N, C) probabilities: sigmoid per label for multi-label, else softmax."""
    return np.asarray(apply_temperature(logits, temperature, multilabel=task == "multilabel"))


def _safe_auc(y: np.ndarray, s: np.ndarray) -> float:
    # AUC is undefined when only one class is present (tiny validation sets): report NaN.
    return roc_auc(y, s) if len(np.unique(y)) == 2 else float("nan")


def medmnist_auc_acc(task: str, y_true: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """(AUC, ACC) as MedMNIST's evaluator computes them."""
    y = np.asarray(y_true)
    if task == "multilabel":
        y = y.reshape(len(y), -1)
        aucs = [_safe_auc(y[:, i], probs[:, i]) for i in range(y.shape[1])]
        accs = [accuracy(y[:, i], probs[:, i] > 0.5) for i in range(y.shape[1])]
        return float(np.nanmean(aucs)), float(np.mean(accs))
    y = y.reshape(-1)
    if task == "binary":
        return _safe_auc(y, probs[:, -1]), accuracy(y, (probs[:, -1] > 0.5).astype(int))
    aucs = [_safe_auc((y == i).astype(int), probs[:, i]) for i in range(probs.shape[1])]
    return float(np.nanmean(aucs)), accuracy(y, probs.argmax(1))


def ece(task: str, y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE; for multi-label the mean of the per-label binary ECEs."""
    y = np.asarray(y_true)
    if task == "multilabel":
        y = y.reshape(len(y), -1)
        return float(np.mean([expected_calibration_error(probs[:, i], y[:, i], n_bins)
                              for i in range(y.shape[1])]))
    return expected_calibration_error(probs, y.reshape(-1), n_bins)


def classification_metrics(task: str, y_true: np.ndarray, logits: np.ndarray,
                           temperature: float = 1.0) -> dict[str, float]:
    """auc, acc (MedMNIST definitions) and ece of temperature-scaled probabilities."""
    probs = probabilities(task, logits, temperature)
    auc, acc = medmnist_auc_acc(task, y_true, probs)
    return {"auc": auc, "acc": acc, "ece": ece(task, y_true, probs)}
