"""`verticals evaluate nlp-sentiment`: fine-tune on --data (or take --bundle), report accuracy,
macro-F1 and ECE on --eval through the serving Predictor, plus a frozen-embedding baseline."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.artifacts import fingerprint
from common.errors import InvalidInput
from common.metrics import accuracy, expected_calibration_error, macro_f1
from common.reports import build_report
from nlp.data import load_labelled
from nlp.hf import offline, resolve_backbone
from nlp.sentiment_predictor import SentimentPredictor
from nlp.sentiment_train import (
    VERTICAL,
    SentimentConfig,
    fit_sentiment,
    label_space,
    publish_sentiment,
)

__all__ = ["evaluate_sentiment", "score_predictor", "frozen_embedding_baseline", "subset"]
log = logging.getLogger(__name__)
QUICK_TRAIN_LIMIT = 8000  # SST-2 rows used by the quick (CI) preset; full uses all 67,349


def subset(texts: list[str], labels: list[str], limit: int | None, seed: int):
    """A seeded random subset of at most `limit` rows (all rows when limit is None)."""
    if not limit or limit >= len(texts):
        return texts, labels
    idx = np.random.default_rng(seed).permutation(len(texts))[:limit]
    return [texts[i] for i in idx], [labels[i] for i in idx]


def score_predictor(
    predictor: SentimentPredictor, texts: Sequence[str], labels: Sequence[str]
) -> dict[str, float]:
    """accuracy / macro-F1 / ECE of the served model on (texts, label names)."""
    unknown = sorted(set(labels) - set(predictor.labels))
    if unknown:
        raise InvalidInput(
            "label_names", f"eval labels {unknown} not in the model's {predictor.labels}"
        )
    probs, truncated = [], 0
    for s in range(0, len(texts), 256):
        reqs = [predictor.parse({"text": t}) for t in texts[s : s + 256]]
        for r in predictor.run(reqs):
            probs.append([r.probabilities[lab] for lab in predictor.labels])
            truncated += r.truncated
    p = np.asarray(probs)
    y = np.array([predictor.labels.index(v) for v in labels])
    pred = p.argmax(1)
    return {
        "accuracy": accuracy(y, pred),
        "macro_f1": macro_f1(y, pred),
        "ece": expected_calibration_error(p, y),
        "n_eval": float(len(y)),
        "n_truncated": float(truncated),
    }


@torch.no_grad()
def _embed(texts: Sequence[str], backbone: str, max_length: int) -> np.ndarray:
    """Mean-pooled, L2-normalised sentence embeddings (the all-MiniLM-L6-v2 recipe)."""
    from transformers import AutoModel, AutoTokenizer

    offline()
    path = resolve_backbone(backbone)
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()  # nosec B615  # local folder, hub access off
    order = np.argsort([len(t) for t in texts])  # similar lengths together: less padding
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    for s in range(0, len(order), 128):
        idx = order[s : s + 128]
        b = tok([texts[i] for i in idx], truncation=True, max_length=max_length,
                padding=True, return_tensors="pt")
        h = model(**b).last_hidden_state
        m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
        e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        out[idx] = torch.nn.functional.normalize(e, dim=-1).numpy()
    return out


def frozen_embedding_baseline(
    train: tuple[list[str], list[str]],
    test: tuple[list[str], list[str]],
    backbone: str = "minilm",
    max_length: int = 64,
    seed: int = 0,
) -> dict[str, float]:
    """Frozen MiniLM embeddings + logistic regression (C picked on a 10% split of train)."""
    from sklearn.linear_model import LogisticRegression

    classes = sorted(set(train[1]))
    ytr = np.array([classes.index(v) for v in train[1]])
    yte = np.array([classes.index(v) if v in classes else -1 for v in test[1]])
    xtr, xte = _embed(train[0], backbone, max_length), _embed(test[0], backbone, max_length)
    idx = np.random.default_rng(seed).permutation(len(ytr))
    va, tr = idx[: len(idx) // 10], idx[len(idx) // 10 :]
    best = max(
        (accuracy(ytr[va], LogisticRegression(C=c, max_iter=2000).fit(xtr[tr], ytr[tr])
                  .predict(xtr[va])), c) for c in (0.1, 1.0, 10.0, 100.0)
    )[1]
    clf = LogisticRegression(C=best, max_iter=2000).fit(xtr, ytr)
    p = clf.predict_proba(xte)
    return {
        "accuracy": accuracy(yte, p.argmax(1)),
        "macro_f1": macro_f1(yte, p.argmax(1)),
        "ece": expected_calibration_error(p, yte),
        "C": best,
        "train_size": float(len(ytr)),
    }


def evaluate_sentiment(args: argparse.Namespace) -> dict[str, Any]:
    started = time.time()
    if not args.eval:
        raise InvalidInput("eval", "pass --eval FILE (the labelled evaluation split)")
    names = [s.strip() for s in args.label_names.split(",")] if args.label_names else None
    ev_texts, ev_raw = load_labelled(args.eval, args.text_column, args.label_column)
    ev_labels = [label_space(ev_raw, names)[1].get(v, v) for v in ev_raw] if names else ev_raw
    preset = args.preset or "quick"
    runs, config, baselines, bundle_path = [], {}, {}, None
    if args.bundle:
        pred = SentimentPredictor.load(args.bundle, root=args.root, device=args.device)
        runs.append(score_predictor(pred, ev_texts, ev_labels))
        bundle_path, config = str(pred.bundle.path), {"bundle_config": pred.bundle.model_config}
    else:
        if not args.data:
            raise InvalidInput("data", "pass --data TRAIN_FILE, or --bundle to score a bundle")
        texts, labels = load_labelled(args.data, args.text_column, args.label_column)
        limit = args.train_limit if args.train_limit is not None else (
            QUICK_TRAIN_LIMIT if preset == "quick" else None)
        seeds = args.seeds or 1
        for seed in range(seeds):
            tx, ty = subset(texts, labels, limit, seed)
            cfg = SentimentConfig.preset(preset, backbone=args.backbone, epochs=args.epochs,
                                         max_length=args.max_length, seed=seed,
                                         device=args.device)
            work_dir = getattr(args, "work_dir", None)
            work = str(Path(work_dir) / f"seed{seed}") if work_dir else None
            fit = fit_sentiment(tx, ty, cfg, label_names=names, out_dir=work)
            bundle = publish_sentiment(fit, args.root, fingerprint(Path(args.data)), args.data)
            pred = SentimentPredictor.load(bundle.path, device=args.device)
            run = score_predictor(pred, ev_texts, ev_labels)
            run.update(seed=seed, train_rows=float(fit.train_size),
                       train_seconds=round(fit.train_seconds, 1),
                       temperature=fit.temperature, **fit.val_metrics)
            runs.append(run)
            bundle_path = str(bundle.path)
            config = {"preset": preset, "train_limit": limit, "train_rows_available": len(texts),
                      **{k: v for k, v in vars(cfg).items()}}
        if not args.no_baseline:
            t0 = time.time()
            tx, ty = subset(texts, labels, limit, 0)
            tx_named = [label_space(ty, names)[1][v] for v in ty]
            base = frozen_embedding_baseline((tx, tx_named), (ev_texts, ev_labels),
                                             max_length=config.get("max_length", 64))
            base["seconds"] = round(time.time() - t0, 1)
            baselines["frozen_minilm_logreg"] = base
    baselines["distilbert_published"] = {"accuracy": 0.913}
    return build_report(
        VERTICAL, args.protocol, Path(args.eval).parent.name or str(args.eval), runs,
        per="per_seed", baselines=baselines, config=config, bundle=bundle_path,
        started=started,
        extra={"eval_file": str(args.eval), "train_file": args.data,
               "goal": {"accuracy": 0.913, "source": "DistilBERT, SST-2 dev"}},
    )
