"""Training a classifier with the shared Trainer: MONAI augmentation, class-balanced loss,
selection on validation AUC, temperature scaling on the validation split. `members=K` trains K
networks (seeds `seed + 1000 k`, each at its own best validation epoch) and serves the mean of
their logits as one model.

    result = fit_classifier(train, val, task="binary", config=FitConfig(epochs=10))
    result.model, result.temperature, result.val_metrics
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from common.calibration import fit_temperature
from common.train import TrainConfig, Trainer
from medical_imaging.metrics import classification_metrics
from medical_imaging.model import Ensemble, build_model, tune_allocator

__all__ = ["FitConfig", "FitResult", "ImageSet", "VolumeAugment", "fit_classifier",
           "predict_logits", "model_logits", "tta_flips"]
log = logging.getLogger(__name__)


@dataclass
class FitConfig:
    """Every training knob, JSON-able (it is stored in the bundle)."""

    arch: str = "resnet18"
    width: float = 0.5
    image_size: int = 28
    in_channels: int = 1
    dimensions: int = 2  # 2: images (N, C, H, W); 3: volumes (N, C, D, H, W)
    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 5e-4
    warmup_ratio: float = 0.05
    balance: bool = True  # class-weighted loss: the 0.5 threshold then sits near the balanced point
    augment: bool = True
    tta: bool = False  # flip test-time augmentation at calibration, evaluation and serving
    label_smoothing: float = 0.0
    mixup: float = 0.0  # Beta(a, a) mixup of volumes/images and one-hot targets when a > 0
    members: int = 1  # ensemble size: independently trained networks, logits averaged
    average_last: int = 0  # per member: mean weights of the last N epochs, if val AUC prefers
    patience: int | None = None
    seed: int = 0
    pretrained: str | None = None
    device: str | None = None
    model_extra: dict[str, Any] = field(default_factory=dict)

    def model_config(self, num_classes: int) -> dict[str, Any]:
        cfg = {"arch": self.arch, "width": self.width, "image_size": self.image_size,
               "in_channels": self.in_channels, "num_classes": num_classes,
               "dimensions": self.dimensions, **self.model_extra}
        if self.pretrained:
            cfg["pretrained"] = self.pretrained
        if self.members > 1:
            cfg["ensemble"] = self.members
        return cfg


@dataclass
class FitResult:
    model: torch.nn.Module
    temperature: float
    val_metrics: dict[str, float]
    history: list[dict[str, float]]
    model_config: dict[str, Any]
    fit_config: dict[str, Any]


def _augmenter(seed: int):
    """MONAI random transforms for one (C, H, W) image in [0, 1]."""
    from monai.transforms import Compose, RandAdjustContrast, RandAffine, RandFlip

    aug = Compose([
        RandFlip(prob=0.5, spatial_axis=1),
        RandAffine(prob=0.7, rotate_range=0.17, scale_range=0.1, translate_range=(2, 2),
                   padding_mode="border"),
        RandAdjustContrast(prob=0.3, gamma=(0.8, 1.25)),
    ])
    aug.set_random_state(seed)
    return aug


class VolumeAugment:
    """Random 3D augmentation of a whole batch (N, C, D, H, W) at once: a flip on each axis
    (p = 0.5 each; TTA averages the same flips), a small affine (p = 0.7: rotation up to 0.17
    rad about each axis, scale 1 +- 0.1 per axis, shift up to 2 voxels) through MONAI's
    `AffineTransform` (one grid-sample for the batch), and a mild gamma change (p = 0.2; MedMNIST
    3D volumes are often binary masks). Per-sample MONAI `RandAffine` on 28^3 volumes cost
    ~7 ms each here, about a third of a training epoch of the quick 3D network."""

    def __init__(self, seed: int, p_affine: float = 0.7, rotate: float = 0.17,
                 scale: float = 0.1, shift_voxels: float = 2.0, p_gamma: float = 0.2):
        from monai.networks.layers import AffineTransform

        self.gen = np.random.default_rng(seed)
        self.p_affine, self.rotate, self.scale = p_affine, rotate, scale
        self.shift, self.p_gamma = shift_voxels, p_gamma
        self.warp = AffineTransform(normalized=True, mode="bilinear", padding_mode="zeros",
                                    align_corners=False)

    def _theta(self, n: int, size: int) -> torch.Tensor:
        g = self.gen
        out = np.tile(np.eye(3, 4), (n, 1, 1))
        for i in np.flatnonzero(g.random(n) < self.p_affine):
            rot = np.eye(3)
            for axis, angle in enumerate(g.uniform(-self.rotate, self.rotate, 3)):
                c, s_ = np.cos(angle), np.sin(angle)
                a, b = [k for k in range(3) if k != axis]
                r = np.eye(3)
                r[a, a], r[a, b], r[b, a], r[b, b] = c, -s_, s_, c
                rot = rot @ r
            out[i, :, :3] = rot @ np.diag(g.uniform(1 - self.scale, 1 + self.scale, 3))
            out[i, :, 3] = g.uniform(-self.shift, self.shift, 3) * 2 / size
        return torch.as_tensor(out, dtype=torch.float32)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        for axis in (2, 3, 4):
            flip = torch.as_tensor(self.gen.random(n) < 0.5, device=x.device)
            x = torch.where(flip.view(-1, 1, 1, 1, 1), x.flip(axis), x)
        theta = self._theta(n, x.shape[-1]).to(x.device)
        x = self.warp(x, theta).clamp_(0, 1)
        gamma = np.where(self.gen.random(n) < self.p_gamma, self.gen.uniform(0.8, 1.25, n), 1.0)
        return x.pow(torch.as_tensor(gamma, dtype=x.dtype, device=x.device).view(-1, 1, 1, 1, 1))


class ImageSet(Dataset):
    """(N, C, H, W) images or (N, C, D, H, W) volumes, float in [0, 1], with labels; optional
    MONAI augmentation of images (volumes are augmented per batch: `VolumeAugment`)."""

    def __init__(self, images: torch.Tensor, labels: np.ndarray, task: str, augment_seed=None):
        self.images = images
        dtype = torch.float32 if task == "multilabel" else torch.long
        y = np.asarray(labels)
        self.labels = torch.as_tensor(y if task == "multilabel" else y.reshape(-1), dtype=dtype)
        self.aug = (_augmenter(augment_seed) if augment_seed is not None and images.ndim == 4
                    else None)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        x = self.images[i]
        if self.aug is not None:
            from monai.data import get_track_meta, set_track_meta

            # MONAI's MetaTensor bookkeeping doubles the cost of a 28-px affine and is unused
            # here; the flag is global, so it is restored right after.
            prev = get_track_meta()
            set_track_meta(False)
            try:
                x = torch.as_tensor(self.aug(x)).float().clamp_(0, 1)
            finally:
                set_track_meta(prev)
        return x, self.labels[i]


def tta_flips(x: torch.Tensor) -> list[list[int]]:
    """The flips test-time augmentation averages: none and the horizontal one for images;
    none and each single axis for volumes (all three are flipped in training)."""
    return [[], [-1]] if x.ndim <= 4 else [[], [-1], [-2], [-3]]


def model_logits(model: torch.nn.Module, x: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """Logits of one batch (2D or 3D), averaged over `tta_flips` when `tta`."""
    if not tta:
        return model(x).float()
    flips = tta_flips(x)
    return sum(model(torch.flip(x, dims=f) if f else x).float() for f in flips) / len(flips)


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 256,
                   device: torch.device | str = "cpu", tta: bool = False) -> np.ndarray:
    """Logits for (N, C, H, W) images or (N, C, D, H, W) volumes, in eval mode; `tta`
    averages them over flips (`tta_flips`; flips are part of the training augmentation)."""
    model.eval()
    if images.ndim == 5:  # volumes: keep activations of one batch in the hundreds of MB
        batch_size = min(batch_size, 32)
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(device)
        out.append(model_logits(model, x, tta).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


def _loss_fn(task: str, labels: np.ndarray, num_classes: int, cfg: FitConfig):
    if task == "multilabel":
        y = np.asarray(labels, dtype=np.float64)
        pos = y.mean(0).clip(1e-3, 1 - 1e-3)
        pw = torch.as_tensor((1 - pos) / pos, dtype=torch.float32) if cfg.balance else None
        return torch.nn.BCEWithLogitsLoss(pos_weight=pw)
    weight = None
    if cfg.balance:
        counts = np.bincount(np.asarray(labels).reshape(-1), minlength=num_classes)
        weight = torch.as_tensor(len(labels) / (num_classes * np.maximum(counts, 1)),
                                 dtype=torch.float32)
    return torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)


class _Mixup:
    """Mixup (Zhang et al. 2018): convex pairs of inputs and of their one-hot targets; the
    cross-entropy and BCE losses here accept such soft targets as they are."""

    def __init__(self, alpha: float, task: str, num_classes: int, seed: int):
        self.alpha, self.task, self.k = alpha, task, num_classes
        self.gen = np.random.default_rng(seed)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lam = float(self.gen.beta(self.alpha, self.alpha))
        perm = torch.as_tensor(self.gen.permutation(len(x)), device=x.device)
        t = y.float() if self.task == "multilabel" else torch.nn.functional.one_hot(
            y, self.k).float()
        return lam * x + (1 - lam) * x[perm], lam * t + (1 - lam) * t[perm]


def _fit_one(train: tuple[torch.Tensor, np.ndarray], val: tuple[torch.Tensor, np.ndarray],
             task: str, num_classes: int, cfg: FitConfig, out_dir: str | None):
    """One network: (model selected on val AUC, Trainer history, device)."""
    single = {k: v for k, v in cfg.model_config(num_classes).items() if k != "ensemble"}
    torch.manual_seed(cfg.seed)
    # channels-last (NHWC) convolutions: the layout oneDNN and tensor cores prefer; on this CPU
    # a BreastMNIST eval went 269 -> 226 s (PneumoniaMNIST unchanged); same saved tensors
    fmt = torch.channels_last if cfg.dimensions == 2 else torch.contiguous_format
    if cfg.dimensions == 3:
        tune_allocator()
    model = build_model(single).to(memory_format=fmt)
    loss = _loss_fn(task, train[1], num_classes, cfg)
    mix = _Mixup(cfg.mixup, task, num_classes, cfg.seed) if cfg.mixup > 0 else None
    vol_aug = VolumeAugment(cfg.seed) if cfg.augment and cfg.dimensions == 3 else None

    def step(m, batch):
        x, y = batch
        x = x.contiguous(memory_format=fmt)
        if vol_aug is not None:
            x = vol_aug(x)
        if mix is not None:
            x, y = mix(x, y)
        return loss.to(x.device)(m(x), y)

    def evaluate(m, loader):
        logits = torch.cat([m(x.to(next(m.parameters()).device)).float().cpu()
                            for x, _ in loader]).numpy()
        labels = np.concatenate([y.numpy() for _, y in loader])
        met = classification_metrics(task, labels, logits, temperature=1.0)
        return {"val_auc": met["auc"], "val_acc": met["acc"]}

    tcfg = TrainConfig(
        epochs=cfg.epochs, batch_size=cfg.batch_size,
        eval_batch_size=256 if cfg.dimensions == 2 else 32, lr=cfg.lr,
        weight_decay=cfg.weight_decay, warmup_ratio=cfg.warmup_ratio, seed=cfg.seed,
        monitor="val_auc", mode="max", patience=cfg.patience, device=cfg.device,
        out_dir=out_dir, resume=out_dir is not None, average_last=cfg.average_last,
    )
    train_set = ImageSet(train[0], train[1], task, cfg.seed if cfg.augment else None)
    val_set = ImageSet(val[0], val[1], task)
    trainer = Trainer(model, tcfg, step_fn=step, eval_fn=evaluate)
    res = trainer.fit(train_set, val_set)
    log.info("seed %d: best epoch %s, averaged epochs %d", cfg.seed, res.best_epoch,
             res.averaged_epochs)
    return trainer.model.eval(), res.history, trainer.device


def fit_classifier(train: tuple[torch.Tensor, np.ndarray], val: tuple[torch.Tensor, np.ndarray],
                   task: str, num_classes: int, config: FitConfig,
                   out_dir: str | None = None) -> FitResult:
    """Train `members` networks on `train`, each at its epoch of best validation AUC; fit T on
    the validation logits of their mean."""
    cfg = config
    nets, history, device = [], [], None
    for k in range(max(1, cfg.members)):
        sub = f"{out_dir}/member{k}" if out_dir and cfg.members > 1 else out_dir
        net, hist, device = _fit_one(train, val, task, num_classes,
                                     replace(cfg, seed=cfg.seed + 1000 * k), sub)
        nets.append(net)
        history += [{**h, "member": k} for h in hist] if cfg.members > 1 else hist
    model = Ensemble(nets).eval() if len(nets) > 1 else nets[0]
    logits = predict_logits(model, val[0], device=device, tta=cfg.tta)
    temperature = fit_temperature(logits, np.asarray(val[1]), multilabel=task == "multilabel")
    val_metrics = classification_metrics(task, val[1], logits, temperature)
    log.info("T=%.3f, val %s", temperature, val_metrics)
    return FitResult(model.cpu(), temperature, val_metrics, history,
                     cfg.model_config(num_classes), asdict(cfg))
