"""The nlp-translation gate: sacreBLEU (and chrF) of an existing bundle on a parallel split,
translated through the serving Predictor as `evaluate --bundle` does.

DATA is `DIR/PREFIX` (files `DIR/PREFIX.<src>[.gz]` and `DIR/PREFIX.<tgt>[.gz]`, the languages
of the bundle) or `DIR` alone for the prefix `test`, else the evaluation's default
`test_2016_flickr`. --limit N translates only the first N sentences, so the gate stays quick.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common.artifacts import Bundle
from common.errors import InvalidInput

__all__ = ["gate_score", "split_of"]
_PREFIXES = ("test", "test_2016_flickr")


def split_of(data: str | Path, src: str) -> tuple[Path, str]:
    """(folder, prefix) named by DATA."""
    from nlp.data import parallel_file

    path = Path(data)
    if not path.is_dir():
        return path.parent, path.name
    for prefix in _PREFIXES:
        try:
            parallel_file(path, prefix, src)
            return path, prefix
        except InvalidInput:
            continue
    raise InvalidInput("data", f"{path} has no test.{src}[.gz] nor test_2016_flickr.{src}[.gz]; "
                               "name the split as DIR/PREFIX")


def gate_score(bundle: Bundle, data: str | Path, args: argparse.Namespace | None
               ) -> dict[str, float]:
    from nlp.data import read_parallel
    from nlp.translation_eval import bleu_scores, translate_all
    from nlp.translation_predictor import TranslationPredictor

    meta = bundle.read_json("translation.json")
    src, tgt = meta["src"], meta["tgt"]
    folder, prefix = split_of(data, src)
    sources, refs = read_parallel(folder, prefix, src, tgt)
    limit = getattr(args, "limit", None)
    sources, refs = (sources[:limit], refs[:limit]) if limit else (sources, refs)
    if not sources:
        raise InvalidInput("data", f"{prefix}: no sentence pairs")
    pred = TranslationPredictor.load(bundle.path, device=getattr(args, "device", None))
    scores, _ = bleu_scores(translate_all(pred, sources), refs)
    return {"bleu": scores["bleu"], "chrf": scores["chrf"], "n": float(len(sources))}
