"""MedMNIST `.npz` files in every layout MedMNIST ships, read into model-ready tensors.

Layouts (images per split `{split}_images`, labels `{split}_labels`):
- grey 2D (N, H, W) → (N, 1, H, W); RGB 2D (N, H, W, 3) → (N, 3, H, W);
- 3D (N, D, H, W) → (N, 1, D, H, W); a channel-last 3D file (N, D, H, W, C) → (N, C, D, H, W).
Tasks: labels (N,) or (N, 1) of class indices (binary when two classes, else multi-class;
ordinal must be named, it cannot be told from labels) or (N, k) of 0/1 (multi-label).
The channel count, dimensionality and task come from the file, never from its name.

    d = load_medmnist("adrenalmnist3d.npz")
    d["train"][0].shape, d["task"], d["dimensions"]   # (1188, 1, 28, 28, 28), "binary", 3
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.errors import InvalidInput
from medical_imaging.metrics import TASKS, infer_task

__all__ = ["load_medmnist", "layout_of"]
_SPLITS = ("train", "val", "test")


def layout_of(shape: tuple[int, ...]) -> tuple[int, int]:
    """(dimensions, channels) of a MedMNIST image array shape (N, ...); ValueError otherwise.

    A 4-D array ending in 3 is RGB 2D (N, H, W, 3) unless it is a cube (N, 3, 3, 3)."""
    if len(shape) == 3:
        return 2, 1
    if len(shape) == 4:
        rgb = shape[-1] == 3 and shape[1] == shape[2] != 3
        return (2, 3) if rgb else (3, 1)
    if len(shape) == 5 and shape[-1] in (1, 3):
        return 3, int(shape[-1])
    raise ValueError(f"images of shape {tuple(shape)} are not a MedMNIST layout "
                     "((N,H,W), (N,H,W,3), (N,D,H,W) or (N,D,H,W,C))")


def _to_tensor(imgs: np.ndarray) -> torch.Tensor:
    dims, channels = layout_of(imgs.shape)
    x = torch.from_numpy(np.ascontiguousarray(imgs)).float()
    x = x.div(255.0) if imgs.dtype == np.uint8 else x.clamp(0, 1)
    if len(imgs.shape) == 3 or (dims == 3 and len(imgs.shape) == 4):
        return x.unsqueeze(1)
    return x.movedim(-1, 1).contiguous()  # channel-last → channel-first


def _labels(y: np.ndarray, n: int, split: str, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or len(y) != n:
        raise InvalidInput("data", f"{name}: {split}_labels of shape {y.shape} do not fit "
                                   f"{n} images")
    if len(y) and y.min() < 0:
        raise InvalidInput("data", f"{name}: {split}_labels hold negative values")
    return y.astype(np.int64)


def load_medmnist(path: str | Path, task: str | None = None) -> dict[str, Any]:
    """A MedMNIST `.npz` → {"train"|"val"|"test": (images (N, C, [D,] H, W) float in [0, 1],
    labels int64 (N, 1) or (N, k)), "task", "num_classes", "dimensions", "in_channels",
    "name"}. The task comes from the labels unless given."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput("data", f"{path}: no such file")
    try:
        d = np.load(path, allow_pickle=False)
        raw = {s: (d[f"{s}_images"], d[f"{s}_labels"]) for s in _SPLITS}
        layouts = {s: layout_of(raw[s][0].shape) for s in _SPLITS}
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as e:
        raise InvalidInput("data", f"{path.name}: not a MedMNIST .npz file "
                                   f"({type(e).__name__}: {e})") from None
    shapes = {raw[s][0].shape[1:] for s in _SPLITS}
    if len(shapes) != 1:
        raise InvalidInput("data", f"{path.name}: splits hold images of different shapes "
                                   f"{sorted(shapes)}")
    splits = {s: (_to_tensor(raw[s][0]), _labels(raw[s][1], len(raw[s][0]), s, path.name))
              for s in _SPLITS}
    task = task or infer_task(np.concatenate([splits[s][1] for s in _SPLITS]))
    if task not in TASKS:
        raise InvalidInput("task", f"{task!r} is not one of {', '.join(TASKS)}")
    y = splits["train"][1]
    if task == "multilabel":
        if y.shape[1] < 2 or max(int(splits[s][1].max(initial=0)) for s in _SPLITS) > 1:
            raise InvalidInput("task", f"{path.name}: multilabel needs labels (N, k>1) of 0/1")
        ncls = y.shape[1]
    else:
        if y.shape[1] != 1:
            raise InvalidInput("task", f"{path.name}: labels (N, {y.shape[1]}) are multi-label, "
                                       f"not {task}")
        ncls = int(max(int(splits[s][1].max(initial=0)) for s in _SPLITS) + 1)
    dims, channels = layouts["train"]
    return {**splits, "task": task, "num_classes": max(ncls, 2), "dimensions": dims,
            "in_channels": channels, "name": path.stem}
