"""`verticals evaluate nlp-translation`: train on DIR/train (select on DIR/val) or take --bundle,
translate `<test-prefix>.<src>` through the serving Predictor, and score with sacreBLEU."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.artifacts import fingerprint
from common.errors import InvalidInput
from common.reports import build_report
from nlp.data import parallel_file, read_parallel
from nlp.translation_predictor import TranslationPredictor
from nlp.translation_train import (
    VERTICAL,
    TranslationConfig,
    fit_translation,
    publish_translation,
)

__all__ = ["bleu_scores", "translate_all", "evaluate_translation", "tune_decoding"]


def bleu_scores(hyps: Sequence[str], refs: Sequence[str]) -> tuple[dict[str, float], dict]:
    """sacreBLEU cased/detokenised BLEU, chrF, and lowercased 13a-tokenised BLEU
    (`bleu_tok_lc`, the convention of older Multi30k papers), with their signatures."""
    from sacrebleu.metrics import BLEU, CHRF

    bleu, chrf, bleu_lc = BLEU(), CHRF(), BLEU(lowercase=True, tokenize="13a")
    refs_l = [list(refs)]
    scores = {
        "bleu": bleu.corpus_score(list(hyps), refs_l).score,
        "chrf": chrf.corpus_score(list(hyps), refs_l).score,
        "bleu_tok_lc": bleu_lc.corpus_score(list(hyps), refs_l).score,
    }
    sigs = {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature()),
            "bleu_tok_lc": str(bleu_lc.get_signature())}
    return scores, sigs


def translate_all(pred: TranslationPredictor, texts: Sequence[str], chunk: int = 128) -> list[str]:
    """Translate through Predictor.run (exactly the serving path)."""
    out = []
    for s in range(0, len(texts), chunk):
        reqs = [pred.parse({"text": t, "source_lang": pred.src, "target_lang": pred.tgt})
                for t in texts[s : s + chunk]]
        out += [r.translation for r in pred.run(reqs)]
    return out


def evaluate_translation(args: argparse.Namespace) -> dict[str, Any]:
    started = time.time()
    if not args.data:
        raise InvalidInput("data", "pass --data DIR holding <prefix>.<lang>.gz files")
    src, tgt, prefix = args.src, args.tgt, args.test_prefix
    test_src, test_ref = read_parallel(args.data, prefix, src, tgt)
    preset = args.preset or "quick"
    config: dict[str, Any] = {"preset": preset, "test_prefix": prefix}
    if args.bundle:
        pred = TranslationPredictor.load(args.bundle, root=args.root, device=args.device,
                                         num_beams=args.num_beams,
                                         length_penalty=getattr(args, "length_penalty", None))
        config["bundle_config"] = pred.bundle.model_config
        train_info: dict[str, float] = {}
    else:
        tr_src, tr_tgt = read_parallel(args.data, "train", src, tgt)
        val = read_parallel(args.data, "val", src, tgt) if _has(args.data, "val", src) else None
        cfg = TranslationConfig.preset(preset, src=src, tgt=tgt, epochs=args.epochs,
                                       checkpoint=args.checkpoint, device=args.device)
        fit = fit_translation(tr_src, tr_tgt, cfg, val=val, out_dir=getattr(args, "work_dir", None))
        fp = fingerprint([parallel_file(args.data, "train", lang) for lang in (src, tgt)])
        bundle = publish_translation(fit, args.root, fp, str(args.data))
        pred = TranslationPredictor.load(bundle.path, device=args.device,
                                         num_beams=args.num_beams,
                                         length_penalty=getattr(args, "length_penalty", None))
        config.update(vars(cfg))
        train_info = {"train_pairs": float(fit.train_pairs),
                      "train_seconds": round(fit.train_seconds, 1),
                      "best_val_loss": fit.best_val_loss or float("nan"),
                      "averaged_epochs": float(fit.averaged_epochs)}
    if getattr(args, "tune_decoding", False):
        pred, config["decoding"] = tune_decoding(pred, args, src, tgt)
    t0 = time.time()
    hyps = translate_all(pred, test_src)
    scores, sigs = bleu_scores(hyps, test_ref)
    run = {**scores, **train_info, "decode_seconds": round(time.time() - t0, 1),
           "num_beams": float(pred.num_beams), "length_penalty": pred.length_penalty,
           "n_test": float(len(test_src))}
    return build_report(
        VERTICAL, args.protocol, f"{Path(args.data).name}:{src}-{tgt}:{prefix}", [run],
        per="per_seed",
        baselines={"fairseq_tiny_transformer_published": {"bleu_tok_lc": 41.0}},
        config=config, bundle=str(pred.bundle.path), started=started,
        extra={"signatures": sigs, "samples": [
            {"source": s, "reference": r, "hypothesis": h}
            for s, r, h in list(zip(test_src, test_ref, hyps, strict=True))[:5]],
            "goal": {"bleu": 35.0, "bleu_tok_lc": 41.0, "preset": "full"}},
    )


# (num_beams, length_penalty) pairs tried on the validation split by --tune-decoding
DECODING_GRID = ((4, 1.0), (4, 0.6), (4, 1.4), (6, 0.6), (6, 1.0), (6, 1.4))


def tune_decoding(pred: TranslationPredictor, args: argparse.Namespace, src: str, tgt: str,
                  ) -> tuple[TranslationPredictor, dict[str, Any]]:
    """Beam size and length penalty with the best BLEU on DIR/val (never the test split);
    returns a predictor set to them and the table of what was tried."""
    if not _has(args.data, "val", src):
        raise InvalidInput("tune_decoding", f"no val.{src}.gz/val.{tgt}.gz in {args.data}")
    val_src, val_ref = read_parallel(args.data, "val", src, tgt)
    tried = []
    for beams, lp in DECODING_GRID:
        pred.num_beams, pred.length_penalty = beams, lp
        score = bleu_scores(translate_all(pred, val_src), val_ref)[0]["bleu"]
        tried.append({"num_beams": beams, "length_penalty": lp, "val_bleu": round(score, 3)})
    best = max(tried, key=lambda t: t["val_bleu"])
    pred.num_beams, pred.length_penalty = best["num_beams"], best["length_penalty"]
    return pred, {"chosen_on": "val", "chosen": best, "tried": tried}


def _has(data: str, prefix: str, lang: str) -> bool:
    try:
        parallel_file(data, prefix, lang)
        return True
    except InvalidInput:
        return False
