"""Training a translation model with the shared Trainer (from scratch or from a checkpoint) and
publishing the bundle."""

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
from common.device import seed_everything
from common.errors import InvalidInput
from common.monitoring.profile import PROFILE_FILE
from common.train import TrainConfig, Trainer, claim_work_dir
from nlp.batching import GroupedBatches, first
from nlp.hf import HF_DIR
from nlp.translation_model import (
    SIZES,
    decoder_inputs,
    load_checkpoint,
    marian_from_scratch,
    train_bpe,
)

__all__ = ["TranslationConfig", "TranslationFit", "fit_translation", "publish_translation"]
log = logging.getLogger(__name__)
VERTICAL = "nlp-translation"

CHECKPOINT_EVERY = 300  # steps between mid-epoch checkpoints when an out_dir is given
PRESETS: dict[str, dict[str, Any]] = {
    "test": dict(size="test", epochs=6, batch_size=32, lr=3e-3, warmup_steps=10, num_beams=2,
                 max_new_tokens=32),
    "demo": dict(size="demo", epochs=20, batch_size=32, lr=2e-3, warmup_steps=50),
    "quick": dict(size="quick", epochs=2, batch_size=64, lr=2e-3, warmup_steps=200),
    # full: 10 epochs left val loss still falling (BLEU 38.3); 16 epochs + the average of the
    # last 4 epoch ends fit about 100 minutes of one quiet core
    "full": dict(size="full", epochs=16, batch_size=64, lr=1.5e-3, warmup_steps=800,
                 average_last=4),
}


@dataclass
class TranslationConfig:
    src: str = "en"
    tgt: str = "de"
    size: str = "quick"  # a key of translation_model.SIZES (from-scratch Marian)
    checkpoint: str | None = None  # or: fine-tune/package this HF seq2seq checkpoint
    epochs: int = 6
    batch_size: int = 64  # sentence pairs per step
    lr: float = 1.5e-3
    warmup_steps: int = 400
    weight_decay: float = 0.0001
    label_smoothing: float = 0.1
    average_last: int = 0  # checkpoint averaging over the last N epochs (kept if val improves)
    max_source_tokens: int = 128  # longer sentences are split (never cut) at inference
    num_beams: int = 4
    max_new_tokens: int = 128
    source_prefix: str = ""  # e.g. "translate English to German: " for T5 checkpoints
    seed: int = 0
    device: str | None = None

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> TranslationConfig:
        if name not in PRESETS:
            raise InvalidInput("preset", f"{name!r} is not one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}})


@dataclass
class TranslationFit:
    model: Any
    tokenizer: Any
    config: TranslationConfig
    history: list[dict[str, float]] = field(default_factory=list)
    train_pairs: int = 0
    train_seconds: float = 0.0
    best_val_loss: float | None = None
    averaged_epochs: int = 0
    profile: dict[str, Any] | None = None  # monitoring's reference (validation sentences)


def _pairs_dataset(tok: Any, src: Sequence[str], tgt: Sequence[str], cfg: TranslationConfig,
                   seed: int) -> GroupedBatches:
    """Length-grouped batches of (input_ids, attention_mask, labels with -100 on padding)."""
    max_len = cfg.max_source_tokens
    s_ids = tok([cfg.source_prefix + s for s in src], truncation=True, max_length=max_len)
    t_ids = tok(text_target=list(tgt), truncation=True, max_length=max_len)["input_ids"]
    s_ids = s_ids["input_ids"]

    def make(idx: np.ndarray) -> dict[str, torch.Tensor]:
        enc = tok.pad({"input_ids": [s_ids[i] for i in idx]}, return_tensors="pt")
        lab = tok.pad({"input_ids": [t_ids[i] for i in idx]}, return_tensors="pt")
        labels = lab["input_ids"].masked_fill(lab["attention_mask"] == 0, -100)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                "labels": labels}

    lengths = [max(len(a), len(b)) for a, b in zip(s_ids, t_ids, strict=True)]
    return GroupedBatches(lengths, cfg.batch_size, make, seed=seed)


def fit_translation(
    src: Sequence[str],
    tgt: Sequence[str],
    cfg: TranslationConfig,
    val: tuple[Sequence[str], Sequence[str]] | None = None,
    out_dir: str | None = None,
) -> TranslationFit:
    """Train (or fine-tune) on the pairs; select the epoch with the lowest validation loss."""
    t0 = time.time()
    claim_work_dir(out_dir, {"config": {k: v for k, v in asdict(cfg).items() if k != "device"},
                             "data": fingerprint(src, tgt, *(val or ()))})
    seed_everything(cfg.seed)
    if cfg.checkpoint:
        model, tok = load_checkpoint(cfg.checkpoint)
    else:
        size = SIZES[cfg.size]
        tok = train_bpe([*src, *tgt], size.vocab)
        model = marian_from_scratch(tok, size)
    if cfg.epochs <= 0:  # package a ready checkpoint as a bundle, no training
        return TranslationFit(model.eval(), tok, cfg, [], 0, time.time() - t0,
                              profile=_profile(model.eval(), tok, cfg, val))
    train_ds = _pairs_dataset(tok, src, tgt, cfg, cfg.seed)
    val_ds = _pairs_dataset(tok, val[0], val[1], cfg, 0) if val else None
    smoothing = cfg.label_smoothing

    def step(m: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        labels = batch["labels"]
        logits = m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   decoder_input_ids=decoder_inputs(model, labels)).logits
        return torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
            ignore_index=-100, label_smoothing=smoothing if m.training else 0.0)

    tc = TrainConfig(
        epochs=cfg.epochs,
        batch_size=1,  # items are ready length-grouped batches
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_steps,
        schedule="cosine",
        min_lr_ratio=0.05,
        clip_grad_norm=1.0,
        seed=cfg.seed,
        device=cfg.device,
        monitor="val_loss" if val_ds is not None else "train_loss",
        mode="min",
        out_dir=out_dir,
        resume=out_dir is not None,  # a rerun with the same out_dir continues the run
        checkpoint_every_steps=CHECKPOINT_EVERY if out_dir else None,
        average_last=cfg.average_last,
    )
    trainer = Trainer(model, tc, step_fn=step, collate_fn=first)
    result = trainer.fit(train_ds, val_ds)
    model.cpu().eval()
    return TranslationFit(model, tok, cfg, result.history, len(src), time.time() - t0,
                          result.best_metric, result.averaged_epochs,
                          _profile(model, tok, cfg, val))


def _profile(model: Any, tok: Any, cfg: TranslationConfig,
             val: tuple[Sequence[str], Sequence[str]] | None) -> dict[str, Any] | None:
    """Monitoring's reference from the validation pairs; None without them (the bundle then
    serves with monitoring off, saying why)."""
    if not val or not len(val[0]):
        return None
    from nlp.monitoring import translation_reference

    return translation_reference(model, tok, val[0], val[1], prefix=cfg.source_prefix,
                                 num_beams=cfg.num_beams, max_new_tokens=cfg.max_new_tokens)


def publish_translation(fit: TranslationFit, root: str | Path | None, data_fp: str,
                        source: str, metrics: dict[str, float] | None = None) -> Bundle:
    """Bundle: weights (safetensors) + HF config/tokenizer under hf/ + translation.json."""
    c = fit.config
    name = Path(c.checkpoint).name if c.checkpoint else f"marian-{c.size}"
    w = BundleWriter(root, VERTICAL, name=f"translation-{c.src}-{c.tgt}-{name}")
    try:
        w.save_weights(fit.model.state_dict())
        fit.model.config.save_pretrained(w.dir / HF_DIR)
        fit.tokenizer.save_pretrained(w.dir / HF_DIR)
        if fit.profile is not None:
            w.add_json(PROFILE_FILE, fit.profile)
        w.add_json("translation.json", {
            "src": c.src, "tgt": c.tgt, "max_source_tokens": c.max_source_tokens,
            "num_beams": c.num_beams, "max_new_tokens": c.max_new_tokens,
            "source_prefix": c.source_prefix,
        })
        return w.publish(
            model_class=type(fit.model).__name__,
            model_config=asdict(c),
            metrics={**(metrics or {}), "best_val_loss": fit.best_val_loss,
                     "averaged_epochs": fit.averaged_epochs,
                     "train_pairs": fit.train_pairs, "train_seconds": round(fit.train_seconds, 1)},
            data_fingerprint=data_fp,
            extra={"data": source, "history": fit.history},
        )
    except BaseException:
        w.abort()
        raise
