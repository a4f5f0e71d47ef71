"""From data to a published bundle: the embedded synthetic phantoms, a MedMNIST `.npz`, or a
folder of class sub-folders of images (PNG/JPEG/DICOM/NIfTI)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.artifacts import Bundle, BundleWriter, fingerprint
from common.errors import InvalidInput
from common.monitoring.profile import PROFILE_FILE
from medical_imaging.io import IMAGE_SUFFIXES, load_medmnist, read_image, to_model_input
from medical_imaging.metrics import classification_metrics
from medical_imaging.synthetic import SYNTHETIC_LABELS, phantom_splits
from medical_imaging.train import FitConfig, fit_classifier, predict_logits

__all__ = ["PRESETS", "Dataset2D", "synthetic_dataset", "folder_dataset", "load_dataset",
           "train_and_publish"]
log = logging.getLogger(__name__)

# Training presets for the embedded default / user data (MedMNIST evaluation has its own).
PRESETS: dict[str, dict[str, Any]] = {
    "test": {"n": (384, 128, 128), "fit": {"width": 0.25, "epochs": 4, "batch_size": 64,
                                           "lr": 3e-3}},
    "demo": {"n": (1500, 300, 300), "fit": {"width": 0.25, "epochs": 5, "batch_size": 64,
                                           "lr": 3e-3}},
    "full": {"n": (6000, 1000, 1000), "fit": {"width": 1.0, "epochs": 12, "batch_size": 128}},
}
Dataset2D = dict[str, Any]  # {"train"/"val"/"test": (x, y), task, num_classes, labels, name}


def synthetic_dataset(preset: str = "demo", seed: int = 0) -> Dataset2D:
    """SYNTHETIC phantom splits (lesion / no lesion) at 28 px."""
    n_train, n_val, n_test = PRESETS[preset]["n"]
    raw = phantom_splits(n_train, n_val, n_test, size=28, seed=seed)
    splits = {k: (torch.from_numpy(x).float().div(255).unsqueeze(1), y) for k, (x, y) in
              raw.items()}
    return {**splits, "task": "binary", "num_classes": 2, "labels": list(SYNTHETIC_LABELS),
            "name": f"synthetic-phantoms-{preset}", "synthetic": True,
            "fingerprint": fingerprint("synthetic phantoms", preset, seed,
                                       [raw[k][0] for k in raw])}


def folder_dataset(root: Path, image_size: int = 28, in_channels: int = 1, seed: int = 0,
                   val_fraction: float = 0.2) -> Dataset2D:
    """ImageFolder layout: root/<class>/<image files>; a seeded train/val split (no test)."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if len(classes) < 2:
        raise InvalidInput("data", f"{root}: need at least two class sub-folders of images")
    xs, ys, files = [], [], []
    for ci, c in enumerate(classes):
        for f in sorted((root / c).iterdir()):
            if f.name.lower().endswith(IMAGE_SUFFIXES):
                xs.append(to_model_input(read_image(f), in_channels, image_size))
                ys.append(ci)
                files.append(f)
    if len(xs) < 4:
        raise InvalidInput("data", f"{root}: found only {len(xs)} images")
    order = np.random.default_rng(seed).permutation(len(xs))
    n_val = max(1, int(len(xs) * val_fraction))
    x, y = torch.stack(xs), np.asarray(ys, dtype=np.int64)
    val, tr = order[:n_val], order[n_val:]
    return {"train": (x[tr], y[tr]), "val": (x[val], y[val]), "task":
            "binary" if len(classes) == 2 else "multiclass", "num_classes": len(classes),
            "labels": classes, "name": root.name, "synthetic": False,
            "fingerprint": fingerprint(files)}


def load_dataset(path: str | Path, task: str | None = None, labels: list[str] | None = None,
                 image_size: int = 28, in_channels: int = 1) -> Dataset2D:
    """A MedMNIST `.npz` or an image folder."""
    path = Path(path)
    if path.is_dir():
        return folder_dataset(path, image_size, in_channels)
    if path.suffix != ".npz":
        raise InvalidInput("data", f"{path.name}: use a MedMNIST .npz file or a folder of "
                                   "class sub-folders")
    d = load_medmnist(path, task)
    d["labels"] = labels or [f"class_{i}" for i in range(d["num_classes"])]
    if len(d["labels"]) != d["num_classes"]:
        raise InvalidInput("labels", f"{len(d['labels'])} names for {d['num_classes']} classes")
    d["synthetic"] = False
    d["fingerprint"] = fingerprint(path)
    return d


def _fit_to_data(cfg: FitConfig, data: Dataset2D) -> FitConfig:
    """Channels, size and dimensionality from the data (2D (N, C, S, S), 3D (N, C, S, S, S))."""
    x = data["train"][0]
    dims = x.ndim - 2
    if dims not in (2, 3) or len(set(x.shape[2:])) != 1:
        raise InvalidInput("data", f"{data['name']}: training inputs of shape "
                                   f"{tuple(x.shape[1:])} are not square images or cubic "
                                   "volumes")
    return replace(cfg, in_channels=int(x.shape[1]), image_size=int(x.shape[-1]),
                   dimensions=dims)


def _profile(res: Any, data: Dataset2D, cfg: FitConfig) -> dict[str, Any]:
    """Monitoring's reference: the validation images' summaries and calibrated scores."""
    from medical_imaging.metrics import probabilities
    from medical_imaging.monitoring import build_profile

    x = data["val"][0]
    probs = probabilities(data["task"], predict_logits(res.model, x, tta=cfg.tta),
                          res.temperature)
    vm = res.val_metrics
    return build_profile(x.numpy(), probs, data["task"], list(data["labels"]),
                         {"roc_auc": vm["auc"], "accuracy": vm["acc"], "ece": vm["ece"]},
                         source="nifti" if x.ndim == 5 else "png")  # volumes: as NIfTI


def train_and_publish(data: Dataset2D, root: str | Path | None, cfg: FitConfig,
                      abstain_threshold: float | None = None,
                      name: str | None = None) -> Bundle:
    """Train, calibrate, measure (val, and test when present) and publish a bundle."""
    cfg = _fit_to_data(cfg, data)
    res = fit_classifier(data["train"], data["val"], data["task"], data["num_classes"], cfg)
    metrics = {f"val_{k}": v for k, v in res.val_metrics.items()}
    if "test" in data:
        logits = predict_logits(res.model, data["test"][0], tta=cfg.tta)
        test = classification_metrics(data["task"], data["test"][1], logits, res.temperature)
        metrics.update({f"test_{k}": v for k, v in test.items()})
    metrics["temperature"] = res.temperature
    w = BundleWriter(root, "medical", name or f"medical-{cfg.arch}-{data['name']}")
    w.save_weights(res.model.state_dict())
    w.add_json("history.json", res.history)
    w.add_json(PROFILE_FILE, _profile(res, data, cfg))
    return w.publish(
        model_class="medical_imaging.model.build_model",
        model_config={
            "net": res.model_config, "dimensions": cfg.dimensions, "task": data["task"],
            "labels": data["labels"],
            "temperature": res.temperature, "abstain_threshold": abstain_threshold,
            "synthetic": data["synthetic"], "dataset": data["name"], "fit": res.fit_config,
        },
        metrics=metrics,
        data_fingerprint=data["fingerprint"],
        extra={"synthetic_data": data["synthetic"]},
    )
