"""NLP bench: CPU serving speed of sentiment (fp32 vs dynamic int8) with the accuracy change,
and translation speed (greedy vs beam, batch 1 vs batched).

    python bench/nlp.py [--quick] [--out bench/results/nlp.json] [--root artifacts]
                        [--sentiment-bundle latest] [--translation-bundle latest]
                        [--sst2 ../shared/data/sst2/dev.tsv]

Uses the newest bundles under --root (train them with `verticals train nlp-sentiment ...`);
when a store has none, a tiny `test`-preset model is trained into a temp dir and the JSON says
so (its speed-up says little about MiniLM). Accuracy is measured on SST-2 dev when present,
else on generated embedded reviews. The limit is the bare model's throughput on pre-built
tensors; `vs_limit` is the Predictor's throughput (tokenisation included) as a fraction of it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common.errors import BundleError  # noqa: E402
from common.registry import get_vertical  # noqa: E402


def _load(cls, name: str, ref: str, root: str, **opts):
    try:
        return cls.load(ref, root=root, **opts), False
    except BundleError:
        tmp = tempfile.mkdtemp(prefix=f"bench-{name}-")
        try:
            get_vertical(name).train_default(Path(tmp), preset="test")
            return cls.load("latest", root=tmp, **opts), True  # setup reads everything
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _rate(fn, n_items: int, repeats: int) -> float:
    """Best items/s over `repeats` runs (best-of: the machine is shared)."""
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n_items / best


def _eval_texts(sst2: str | None, n: int) -> tuple[list[str], list[str], str]:
    if sst2 and Path(sst2).is_file():
        from nlp.data import load_labelled

        texts, labels = load_labelled(sst2)
        names = {"0": "negative", "1": "positive"}
        return texts[:n], [names.get(v, v) for v in labels[:n]], f"sst2 dev ({sst2})"
    from nlp.embedded import sentiment_examples

    texts, labels = sentiment_examples(n, seed=11)
    return texts, labels, "embedded generated reviews"


def bench_sentiment(args) -> dict:
    from nlp.sentiment_eval import score_predictor
    from nlp.sentiment_model import batched_logits, encode
    from nlp.sentiment_predictor import SentimentPredictor

    n = 128 if args.quick else 872
    fp32, tiny = _load(SentimentPredictor, "nlp-sentiment", args.sentiment_bundle, args.root)
    int8 = SentimentPredictor(fp32.bundle, quantize=True)
    int8.setup(torch.device("cpu"))
    int8.ready = True
    texts, labels, source = _eval_texts(args.sst2, n)
    reps = 2 if args.quick else 3
    out: dict = {"bundle": str(fp32.bundle.path), "tiny_fallback_model": tiny,
                 "eval_data": source, "n_texts": len(texts)}
    # the limit: the same length-bucketed batches on pre-tokenised ids (model time only)
    ids, _ = encode(fp32.tokenizer, texts, fp32.max_length)
    cpu = torch.device("cpu")

    for name, pred in (("fp32", fp32), ("int8_dynamic", int8)):
        reqs = [pred.parse({"text": t}) for t in texts]
        limit = _rate(lambda m=pred.model: batched_logits(m, fp32.tokenizer, ids, cpu),
                      len(ids), reps)
        thr = _rate(lambda p=pred, r=reqs: p.run(r), len(reqs), reps)
        one = _rate(lambda p=pred, r=reqs[:16]: [p.run([x]) for x in r], 16, reps)
        out[name] = {
            "bare_model_texts_per_s": round(limit, 1),
            "predictor_texts_per_s": round(thr, 1),
            "predictor_texts_per_s_batch1": round(one, 1),
            "ratios": {"vs_limit": round(thr / limit, 3)},
            **{k: v for k, v in score_predictor(pred, texts, labels).items()
               if k in ("accuracy", "macro_f1", "ece")},
        }
    out["int8_speedup_batched"] = round(
        out["int8_dynamic"]["predictor_texts_per_s"] / out["fp32"]["predictor_texts_per_s"], 3)
    out["int8_speedup_batch1"] = round(
        out["int8_dynamic"]["predictor_texts_per_s_batch1"]
        / out["fp32"]["predictor_texts_per_s_batch1"], 3)
    out["int8_accuracy_change"] = round(
        out["int8_dynamic"]["accuracy"] - out["fp32"]["accuracy"], 4)
    return out


def bench_translation(args) -> dict:
    from nlp.embedded import parallel_phrases
    from nlp.translation_predictor import TranslationPredictor

    src, _ = parallel_phrases(seed=3)
    n = 32 if args.quick else 128
    texts = src[:n]
    out: dict = {"n_sentences": n}
    for beams in (1, 4):
        pred, tiny = _load(TranslationPredictor, "nlp-translation", args.translation_bundle,
                           args.root, num_beams=beams)
        reqs = [pred.parse({"text": t, "source_lang": pred.src, "target_lang": pred.tgt})
                for t in texts]
        reps = 1 if args.quick else 2
        out[f"beam{beams}"] = {
            "sentences_per_s_batched": round(_rate(lambda p=pred, r=reqs: p.run(r), n, reps), 1),
            "sentences_per_s_batch1": round(
                _rate(lambda p=pred, r=reqs[:8]: [p.run([x]) for x in r], 8, reps), 1),
        }
        out.update(bundle=str(pred.bundle.path), tiny_fallback_model=tiny)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer texts and repeats (< 1 min)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "nlp.json"))
    ap.add_argument("--root", default=os.environ.get("VERTICALS_HOME", str(ROOT / "artifacts")))
    ap.add_argument("--sentiment-bundle", default="latest")
    ap.add_argument("--translation-bundle", default="latest")
    ap.add_argument("--sst2", default=str(ROOT.parent / "shared" / "data" / "sst2" / "dev.tsv"))
    args = ap.parse_args()
    torch.manual_seed(0)
    np.random.seed(0)
    t0 = time.time()
    result = {
        "bench": "nlp",
        "quick": args.quick,
        "machine": {"cpus": os.cpu_count(), "threads": torch.get_num_threads(),
                    "python": platform.python_version(), "torch": torch.__version__},
        "note": "best of repeats; the machine may be shared, so compare ratios, not absolutes",
        "sentiment": bench_sentiment(args),
        "translation": bench_translation(args),
    }
    result["duration_s"] = round(time.time() - t0, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
