"""The medical gate: an existing bundle's MedMNIST AUC (and ACC, ECE) on labelled images, scored
as `evaluate --bundle` scores the test split (the bundle's size, channels, TTA and temperature).

DATA is a MedMNIST-style `.npz` (its `test` split is scored) or an image folder
`DIR/<class>/<files>` whose class folder names are labels of the bundle (every image counts).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from common.artifacts import Bundle
from common.errors import InvalidInput

__all__ = ["gate_score"]


def _from_folder(path: Path, task: str, labels: list[str], net: dict) -> tuple:
    from medical_imaging.pipeline import folder_dataset

    if task == "multilabel":
        raise InvalidInput("data", f"{path.name}: a multi-label bundle needs a .npz, not a "
                                   "folder of classes")
    d = folder_dataset(path, int(net.get("image_size", 28)), int(net.get("in_channels", 1)))
    unknown = [c for c in d["labels"] if c not in labels]
    if unknown:
        raise InvalidInput("data", f"{path.name}: class folders {unknown} are not labels of the "
                                   f"bundle {labels}")
    # folder classes are sorted names; the bundle's label order decides the index
    to_bundle = np.array([labels.index(c) for c in d["labels"]])
    x = torch.cat([d["train"][0], d["val"][0]])
    return x, to_bundle[np.concatenate([d["train"][1], d["val"][1]])]


def _from_npz(path: Path, task: str, labels: list[str]) -> tuple:
    from medical_imaging.io import load_medmnist

    x, y = load_medmnist(path, task)["test"]
    if task == "multilabel":
        if y.ndim != 2 or y.shape[1] != len(labels):
            raise InvalidInput("data", f"{path.name}: test labels {tuple(y.shape)} do not fit a "
                                       f"{len(labels)}-label bundle")
    elif (y.ndim > 1 and y.shape[1] != 1) or (len(y) and not 0 <= y.min() <= y.max()
                                              < len(labels)):
        raise InvalidInput("data", f"{path.name}: test labels do not fit the bundle's "
                                   f"{len(labels)} classes")
    return x, y


def gate_score(bundle: Bundle, data: str | Path) -> dict[str, float]:
    from medical_imaging.evaluate import score_bundle

    path = Path(data)
    cfg = bundle.model_config
    task, labels = cfg["task"], list(cfg["labels"])
    if path.is_dir():
        if int(cfg.get("dimensions", cfg["net"].get("dimensions", 2))) == 3:
            raise InvalidInput("data", f"{path.name}: a 3D bundle is gated on a MedMNIST-style "
                                       ".npz of volumes, not a folder")
        x, y = _from_folder(path, task, labels, cfg["net"])
    elif path.suffix.lower() == ".npz":
        x, y = _from_npz(path, task, labels)
    else:
        raise InvalidInput("data", f"{path.name}: use a MedMNIST .npz or a folder "
                                   "DIR/<class>/<images>")
    if task != "multilabel" and len(np.unique(y)) < 2:
        raise InvalidInput("data", f"{path.name}: AUC needs images of at least two classes, "
                                   f"found {len(np.unique(y))}")
    m = score_bundle(str(bundle.path), {"task": task, "test": (x, y)}, None)
    return {"auc": m["auc"], "acc": m["acc"], "ece": m["ece"], "n": float(len(y))}
