"""What NLP monitoring watches (never the text itself).

Sentiment: token count, unknown-token rate, whether the text was truncated, and the model's
mean-pooled last hidden state (a drift test on embeddings sees a change of topic or domain that
lengths miss); the score is P(positive). Translation: source token count, unknown-token rate,
whether any output piece hit the length cap; the score is the output/input length ratio in
characters (a model that starts to babble or stop early moves it).

`sentiment_features` and `translation_features` give these both at training time (the reference
profile, on the validation texts) and at serving time (`monitor_record`), so the two agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictStr

__all__ = ["unk_rate", "first_row", "sentiment_features", "sentiment_profile",
           "translation_features", "length_ratio", "translation_profile", "source_stats",
           "translation_reference", "SentimentFeedbackRequest", "TranslationFeedbackRequest",
           "MAX_FEEDBACK"]

MAX_FEEDBACK = 10_000


def unk_rate(ids: Sequence[int], unk_id: int | None) -> float:
    """Share of a token sequence that is the unknown token (0 without one)."""
    if unk_id is None or not len(ids):
        return 0.0
    return float(sum(1 for t in ids if t == unk_id)) / len(ids)


def _flag(v: bool) -> str:
    return "true" if v else "false"  # categorical: a rate of truncation is a share of "true"


def sentiment_features(ids: Sequence[Sequence[int]], counts: Sequence[int], max_length: int,
                       unk_id: int | None, embeddings: np.ndarray) -> dict[str, Any]:
    """Tokenised texts (as the model read them), full token counts and pooled embeddings (n, d)
    → {monitored name: column}."""
    return {"num_tokens": np.asarray(counts, dtype=np.float64),
            "unk_rate": np.array([unk_rate(s, unk_id) for s in ids], dtype=np.float64),
            "truncated": [_flag(n > max_length) for n in counts],
            "embedding": np.asarray(embeddings, dtype=np.float32)}


def first_row(cols: dict[str, Any]) -> dict[str, Any]:
    """The first row of feature columns as one record (floats, strings, embedding lists)."""
    out: dict[str, Any] = {}
    for k, v in cols.items():
        if isinstance(v, list):
            out[k] = v[0]
        elif np.ndim(v) == 2:
            out[k] = np.asarray(v[0], dtype=np.float32).tolist()
        else:
            out[k] = float(v[0])
    return out


def sentiment_profile(cols: dict[str, Any], probs: np.ndarray, labels: Sequence[str],
                      metrics: dict[str, float]) -> dict[str, Any]:
    from common.monitoring.profile import build_profile, categorical_ref, embedding_ref, numeric_ref

    feats = {"num_tokens": numeric_ref(cols["num_tokens"]),
             "unk_rate": numeric_ref(cols["unk_rate"]),
             "truncated": categorical_ref(cols["truncated"]),
             "embedding": embedding_ref(cols["embedding"])}
    task = "binary" if len(labels) == 2 else "multiclass"
    p = np.asarray(probs, dtype=np.float64)
    # binary: P(classes[1]), the class common.monitoring.estimate counts as positive
    score = p[:, 1] if task == "binary" else p.max(1)
    return build_profile(feats, task=task, score=numeric_ref(score), metrics=metrics,
                         classes=list(labels))


def length_ratio(source: str, output: str) -> float:
    """Output characters per source character."""
    return len(output) / max(1, len(source))


def translation_features(src_counts: Sequence[int], src_unk: Sequence[float],
                         truncated: Sequence[bool]) -> dict[str, Any]:
    return {"num_tokens": np.asarray(src_counts, dtype=np.float64),
            "unk_rate": np.asarray(src_unk, dtype=np.float64),
            "truncated": [_flag(t) for t in truncated]}


def translation_profile(cols: dict[str, Any], ratios: Sequence[float],
                        metrics: dict[str, float]) -> dict[str, Any]:
    from common.monitoring.profile import build_profile, categorical_ref, numeric_ref

    feats = {"num_tokens": numeric_ref(cols["num_tokens"]),
             "unk_rate": numeric_ref(cols["unk_rate"]),
             "truncated": categorical_ref(cols["truncated"])}
    return build_profile(feats, task="translation", score=numeric_ref(ratios), metrics=metrics,
                         score_name="length_ratio")


def source_stats(tokenizer: Any, prefix: str, texts: Sequence[str]
                 ) -> tuple[list[int], list[float]]:
    """Token counts and unknown-token rates of source texts as the model reads them."""
    ids = tokenizer([prefix + t for t in texts])["input_ids"]
    unk = tokenizer.unk_token_id
    return [len(s) for s in ids], [unk_rate(s, unk) for s in ids]


def translation_reference(model: Any, tokenizer: Any, sources: Sequence[str],
                          references: Sequence[str], *, prefix: str, num_beams: int,
                          max_new_tokens: int, length_penalty: float = 1.0, limit: int = 256,
                          batch_size: int = 32) -> dict[str, Any]:
    """The profile of a translation bundle: the model translates (up to `limit`) validation
    sentences as served (beam search, no forced end token), giving the source statistics, the
    length-ratio distribution and the chrF against the references."""
    import torch
    from sacrebleu.metrics import CHRF

    src, refs = list(sources)[:limit], list(references)[:limit]
    counts, unks = source_stats(tokenizer, prefix, src)
    outs, cut = [], []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(src), batch_size):
            enc = tokenizer([prefix + t for t in src[i:i + batch_size]], padding=True,
                            return_tensors="pt").to(next(model.parameters()).device)
            gen = model.generate(**enc, num_beams=num_beams, max_new_tokens=max_new_tokens,
                                 length_penalty=length_penalty, do_sample=False,
                                 early_stopping=True, forced_eos_token_id=None)
            for seq in gen.tolist():
                seq = [t for t in seq if t != tokenizer.pad_token_id]
                cut.append(tokenizer.eos_token_id not in seq and len(seq) >= max_new_tokens)
                outs.append(tokenizer.decode(seq, skip_special_tokens=True).strip())
    cols = translation_features(counts, unks, cut)
    ratios = [length_ratio(s, o) for s, o in zip(src, outs, strict=True)]
    chrf = float(CHRF().corpus_score(outs, [refs]).score)
    return translation_profile(cols, ratios, {"chrf": chrf})


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: StrictStr = Field(min_length=1, max_length=128,
                          description="the prediction's text_id, or its X-Request-ID")


class SentimentFeedbackItem(_Item):
    label: StrictStr = Field(min_length=1, max_length=128,
                             description="the true label: one of the model's class names")


class SentimentFeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    feedback: list[SentimentFeedbackItem] = Field(min_length=1, max_length=MAX_FEEDBACK)


class TranslationFeedbackItem(_Item):
    label: StrictStr = Field(min_length=1, max_length=5_000,
                             description="the corrected translation (realised chrF)")


class TranslationFeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    feedback: list[TranslationFeedbackItem] = Field(min_length=1, max_length=MAX_FEEDBACK)
