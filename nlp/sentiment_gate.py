"""The nlp-sentiment gate: accuracy (and macro-F1, ECE) of an existing bundle on a labelled
table, through the serving Predictor as `evaluate --bundle` scores its --eval file.

DATA is a table `load_labelled` reads, e.g. SST-2's `dev.tsv` (sentence<TAB>label). Labels must
be the bundle's label names, or raw values renamed with --label-names (SST-2: 0,1 →
negative,positive); --limit N scores the first N rows only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common.artifacts import Bundle
from common.errors import InvalidInput

__all__ = ["gate_score"]


def gate_score(bundle: Bundle, data: str | Path, args: argparse.Namespace | None
               ) -> dict[str, float]:
    from nlp.data import load_labelled
    from nlp.sentiment_eval import score_predictor
    from nlp.sentiment_predictor import SentimentPredictor
    from nlp.sentiment_train import label_space

    texts, labels = load_labelled(data)
    limit = getattr(args, "limit", None)
    texts, labels = (texts[:limit], labels[:limit]) if limit else (texts, labels)
    if not texts:
        raise InvalidInput("data", f"{Path(data).name}: no labelled rows")
    names = getattr(args, "label_names", None)
    if names:
        rename = label_space(labels, [s.strip() for s in names.split(",")])[1]
        labels = [rename[v] for v in labels]
    pred = SentimentPredictor.load(bundle.path, device=getattr(args, "device", None))
    m = score_predictor(pred, texts, labels)  # labels the model lacks: one-line InvalidInput
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "ece": m["ece"],
            "n": m["n_eval"]}
