"""Fine-tuning a sentiment classifier with the shared Trainer, temperature calibration on a
held-out split, and publishing the bundle."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.artifacts import Bundle, BundleWriter, fingerprint
from common.calibration import apply_temperature, fit_temperature
from common.device import seed_everything
from common.errors import InvalidInput
from common.metrics import accuracy, expected_calibration_error, macro_f1
from common.monitoring.profile import PROFILE_FILE
from common.train import TrainConfig, Trainer, claim_work_dir
from nlp.batching import GroupedBatches, first
from nlp.hf import HF_DIR
from nlp.monitoring import sentiment_features, sentiment_profile
from nlp.sentiment_model import batched_logits, batched_outputs, encode, load_backbone

__all__ = ["SentimentConfig", "SentimentFit", "fit_sentiment", "publish_sentiment", "label_space"]
log = logging.getLogger(__name__)
VERTICAL = "nlp-sentiment"

CHECKPOINT_EVERY = 500  # steps between mid-epoch checkpoints when an out_dir is given
PRESETS: dict[str, dict[str, Any]] = {
    # seconds: a tiny BERT built from a config, tokenizer trained on the data
    "test": dict(backbone="tiny", epochs=4, batch_size=16, lr=3e-3, max_length=32),
    # make demo: MiniLM on the embedded set
    "demo": dict(backbone="minilm", epochs=1, batch_size=16, lr=1e-4, max_length=32),
    # CI on SST-2: a subset of train (see evaluate), short max length
    "quick": dict(backbone="minilm", epochs=1, batch_size=32, lr=1e-4, max_length=64),
    "full": dict(backbone="minilm", epochs=3, batch_size=32, lr=5e-5, max_length=66),
}


@dataclass
class SentimentConfig:
    backbone: str = "minilm"  # 'minilm', 'tiny', a local HF folder or a hub id
    max_length: int = 64  # tokens incl. [CLS]/[SEP]; longer texts are truncated and flagged
    epochs: int = 2
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    val_fraction: float = 0.1  # carved from train for model selection and calibration
    max_val: int = 1000
    freeze_word_embeddings: bool = True  # half of MiniLM's weights; freezing costs ~nothing
    seed: int = 0
    device: str | None = None

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SentimentConfig:
        if name not in PRESETS:
            raise InvalidInput("preset", f"{name!r} is not one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}})


@dataclass
class SentimentFit:
    model: torch.nn.Module
    tokenizer: Any
    labels: list[str]
    temperature: float
    config: SentimentConfig
    val_metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    train_size: int = 0
    train_seconds: float = 0.0
    profile: dict[str, Any] | None = None  # monitoring's reference (validation texts)


def _sort_key(v: str) -> tuple[int, Any]:
    try:
        return (0, float(v))
    except ValueError:
        return (1, v)


def label_space(
    labels: Sequence[str], names: Sequence[str] | None = None
) -> tuple[list[str], dict[str, str]]:
    """Class names in order and the raw→name map. Raw values sort numerically when they can;
    `names` renames them in that order (e.g. SST-2's 0,1 → negative,positive)."""
    raw = sorted(set(labels), key=_sort_key)
    if len(raw) < 2:
        raise InvalidInput("label_column", f"need at least 2 classes, found {raw}")
    if names:
        if len(names) != len(raw):
            raise InvalidInput("label_names", f"{len(names)} names for {len(raw)} classes {raw}")
        return list(names), dict(zip(raw, names, strict=True))
    return raw, {r: r for r in raw}


def _split(n: int, cfg: SentimentConfig) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(n)
    n_val = min(cfg.max_val, max(1, int(round(n * cfg.val_fraction))))
    return order[n_val:], order[:n_val]


def fit_sentiment(
    texts: Sequence[str],
    labels: Sequence[str],
    cfg: SentimentConfig,
    label_names: Sequence[str] | None = None,
    out_dir: str | None = None,
) -> SentimentFit:
    """Fine-tune `cfg.backbone` on (texts, labels); calibrate on a held-out split."""
    t0 = time.time()
    claim_work_dir(out_dir, {"config": {k: v for k, v in asdict(cfg).items() if k != "device"},
                             "labels": list(label_names or []),
                             "data": fingerprint(texts, [str(v) for v in labels])})
    classes, rename = label_space(labels, label_names)
    y = np.array([classes.index(rename[v]) for v in labels])
    tr, va = _split(len(texts), cfg)
    seed_everything(cfg.seed)  # the new classification head's init
    model, tok = load_backbone(cfg.backbone, classes, [texts[i] for i in tr])
    if cfg.freeze_word_embeddings and cfg.backbone != "tiny":
        model.get_input_embeddings().weight.requires_grad_(False)
    ids, counts = encode(tok, texts, cfg.max_length)

    def make_batch(idx: np.ndarray) -> dict[str, torch.Tensor]:
        b = tok.pad({"input_ids": [ids[i] for i in idx]}, return_tensors="pt")
        return {
            "input_ids": b["input_ids"],
            "attention_mask": b["attention_mask"],
            "labels": torch.as_tensor(y[idx]),
        }

    train_ds = GroupedBatches([len(ids[i]) for i in tr], cfg.batch_size,
                              lambda j: make_batch(tr[j]), seed=cfg.seed)
    val_ids = [ids[i] for i in va]

    def step(m: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return m(**batch).loss

    def evaluate(m: torch.nn.Module, _loader: Any) -> dict[str, float]:
        logits = batched_logits(m, tok, val_ids, next(m.parameters()).device)
        loss = torch.nn.functional.cross_entropy(torch.as_tensor(logits), torch.as_tensor(y[va]))
        return {"val_accuracy": accuracy(y[va], logits.argmax(1)), "val_loss": float(loss)}

    tc = TrainConfig(
        epochs=cfg.epochs,
        batch_size=1,  # each item is a length-grouped batch of cfg.batch_size rows
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        warmup_ratio=cfg.warmup_ratio,
        schedule="linear",
        clip_grad_norm=1.0,
        seed=cfg.seed,
        device=cfg.device,
        monitor="val_accuracy",
        mode="max",
        out_dir=out_dir,
        resume=out_dir is not None,  # a rerun with the same out_dir continues the run
        checkpoint_every_steps=CHECKPOINT_EVERY if out_dir else None,
    )
    trainer = Trainer(model, tc, step_fn=step, eval_fn=evaluate, collate_fn=first)
    # the Trainer only needs len() of val data to call eval_fn; eval_fn reads val_ids itself
    result = trainer.fit(train_ds, _Sized(len(va)))
    model.eval()
    logits, emb = batched_outputs(model, tok, val_ids, trainer.device)
    temp = fit_temperature(logits, y[va])
    probs = apply_temperature(logits, temp)
    val_metrics = {
        "val_accuracy": accuracy(y[va], probs.argmax(1)),
        "val_macro_f1": macro_f1(y[va], probs.argmax(1)),
        "val_ece": expected_calibration_error(probs, y[va]),
        "val_ece_uncalibrated": expected_calibration_error(apply_temperature(logits, 1.0), y[va]),
    }
    model.cpu()
    cols = sentiment_features(val_ids, [counts[i] for i in va], cfg.max_length,
                              tok.unk_token_id, emb)
    profile = sentiment_profile(cols, probs, classes, {
        "accuracy": val_metrics["val_accuracy"], "ece": val_metrics["val_ece"]})
    return SentimentFit(model, tok, classes, temp, cfg, val_metrics, result.history,
                        len(tr), time.time() - t0, profile)


class _Sized(torch.utils.data.Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def publish_sentiment(
    fit: SentimentFit, root: str | Path | None, data_fp: str, source: str
) -> Bundle:
    """Bundle: weights (safetensors) + HF config/tokenizer under hf/ + sentiment.json."""
    w = BundleWriter(root, VERTICAL, name=f"sentiment-{Path(fit.config.backbone).name}")
    try:
        w.save_weights(fit.model.state_dict())
        fit.model.config.save_pretrained(w.dir / HF_DIR)
        fit.tokenizer.save_pretrained(w.dir / HF_DIR)
        if fit.profile is not None:
            w.add_json(PROFILE_FILE, fit.profile)
        w.add_json("sentiment.json", {
            "labels": fit.labels,
            "temperature": fit.temperature,
            "max_length": fit.config.max_length,
        })
        return w.publish(
            model_class=type(fit.model).__name__,
            model_config=asdict(fit.config),
            metrics={**fit.val_metrics, "train_size": fit.train_size,
                     "train_seconds": round(fit.train_seconds, 1)},
            data_fingerprint=data_fp,
            extra={"data": source, "temperature": fit.temperature, "history": fit.history},
        )
    except BaseException:
        w.abort()
        raise
