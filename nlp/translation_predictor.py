"""Translation Predictor: one text (any length up to MAX_CHARS) → its translation.

Long inputs are split into sentences (and over-long sentences at clauses/words) so every piece
fits the model's source length; the pieces are translated in batches with beam search and an
explicit `max_new_tokens`, then joined back in order. Nothing is cut silently: `segments` says
how many pieces were translated and `truncated` is true if any output hit max_new_tokens.
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from common.errors import InvalidInput
from common.predictor import Predictor
from nlp.hf import rebuild
from nlp.monitoring import first_row, length_ratio, source_stats, translation_features
from nlp.segment import split_sentences, split_to_fit
from nlp.sentiment_model import bucket_length

__all__ = ["TranslationRequest", "TranslationResponse", "TranslationPredictor", "MAX_CHARS"]

MAX_CHARS = 5_000
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_CHARS)]
Lang = Annotated[str, StringConstraints(strip_whitespace=True, to_lower=True, min_length=2,
                                        max_length=12)]


class TranslationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: Text = Field(description="text to translate (1..5,000 characters)")
    source_lang: Lang = Field(description="e.g. en")
    target_lang: Lang = Field(description="e.g. de")
    max_new_tokens: int | None = Field(None, ge=1, le=512,
                                       description="per sentence; default from the bundle")


class TranslationResponse(BaseModel):
    translation: str
    source_lang: str
    target_lang: str
    segments: int = Field(description="pieces (sentences) translated separately and rejoined")
    truncated: bool = Field(description="true if a piece's output reached max_new_tokens")
    model_version: str


class TranslationPredictor(Predictor):
    """Options: `num_beams` and `length_penalty` (defaults from the bundle), `batch_size`
    (pieces per generate)."""

    vertical = "nlp-translation"
    request_model = TranslationRequest
    response_model = TranslationResponse
    max_batch_size = 16
    max_wait_ms = 5.0
    batch_job_size = 64

    def setup(self, device: torch.device) -> None:
        from transformers import AutoModelForSeq2SeqLM

        meta = self.bundle.read_json("translation.json")
        self.src, self.tgt = meta["src"], meta["tgt"]
        self.max_source_tokens = int(meta["max_source_tokens"])
        self.max_new_tokens = int(meta["max_new_tokens"])
        self.prefix = meta.get("source_prefix", "")
        self.num_beams = int(self.options.get("num_beams") or meta["num_beams"])
        # beam scores are divided by length ** length_penalty (> 1 favours longer outputs)
        lp = self.options.get("length_penalty")
        self.length_penalty = float(meta.get("length_penalty", 1.0) if lp is None else lp)
        self.gen_batch = int(self.options.get("batch_size") or 32)
        self.device = device
        self.model, self.tokenizer = rebuild(self.bundle, AutoModelForSeq2SeqLM, device)
        # the decoder has one position embedding per output token: generating past them crashes
        self.max_new_tokens_limit = int(self.model.config.max_position_embeddings)
        # No forced </s> at the length cap: a cut-off output must show as `truncated`, not end
        # with a fake sentence end.
        self.model.generation_config.forced_eos_token_id = None

    def _n_tokens(self, text: str) -> int:
        return len(self.tokenizer(self.prefix + text)["input_ids"])

    def decode(self, request: TranslationRequest) -> dict[str, Any]:
        if request.source_lang != self.src:
            raise InvalidInput("source_lang", f"this model translates {self.src}→{self.tgt}, "
                                              f"not from {request.source_lang!r}")
        if request.target_lang != self.tgt:
            raise InvalidInput("target_lang", f"this model translates {self.src}→{self.tgt}, "
                                              f"not into {request.target_lang!r}")
        if (request.max_new_tokens or 0) > self.max_new_tokens_limit:
            raise InvalidInput("max_new_tokens", f"this model writes at most "
                                                 f"{self.max_new_tokens_limit} tokens per sentence")
        pieces = [p for s in split_sentences(request.text)
                  for p in split_to_fit(s, self._n_tokens, self.max_source_tokens)]
        return {"pieces": pieces, "max_new_tokens": request.max_new_tokens or self.max_new_tokens}

    @torch.no_grad()
    def _generate(self, texts: list[str], max_new: int) -> tuple[list[str], list[bool]]:
        """Translate pieces in length buckets (same padding alone or batched)."""
        tok = self.tokenizer
        ids = tok([self.prefix + t for t in texts], truncation=False)["input_ids"]
        outs: list[str] = [""] * len(texts)
        hit: list[bool] = [False] * len(texts)
        buckets: dict[int, list[int]] = {}
        for i, seq in enumerate(ids):
            buckets.setdefault(bucket_length(len(seq), 8), []).append(i)
        for length, members in sorted(buckets.items()):
            for s in range(0, len(members), self.gen_batch):
                idx = members[s : s + self.gen_batch]
                enc = tok.pad({"input_ids": [ids[i] for i in idx]}, padding="max_length",
                              max_length=length, return_tensors="pt").to(self.device)
                gen = self.model.generate(
                    **enc, num_beams=self.num_beams, max_new_tokens=max_new,
                    length_penalty=self.length_penalty,
                    do_sample=False, early_stopping=True,
                )
                for row, i in enumerate(idx):
                    seq = gen[row].tolist()
                    ended = tok.eos_token_id in seq[1:]
                    hit[i] = not ended and len(seq) - 1 >= max_new
                    outs[i] = tok.decode(seq, skip_special_tokens=True).strip()
        return outs, hit

    def monitor_record(self, request: TranslationRequest, output: dict[str, Any],
                       response: TranslationResponse) -> dict[str, Any]:
        """Source token count and unknown-token rate, output truncation (nlp.monitoring); the
        score is the output/input length ratio, the prediction the translation."""
        counts, unks = source_stats(self.tokenizer, self.prefix, [request.text])
        feats = first_row(translation_features(counts, unks, [response.truncated]))
        return {"id": None, "features": feats, "probs": None, "prediction": response.translation,
                "score": length_ratio(request.text, response.translation)}

    def predict_batch(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        by_budget: dict[int, list[int]] = {}
        for k, it in enumerate(items):
            by_budget.setdefault(it["max_new_tokens"], []).append(k)
        translated: dict[int, tuple[list[str], list[bool]]] = {}
        for max_new, ks in by_budget.items():
            flat = [(k, p) for k in ks for p in items[k]["pieces"]]
            if not flat:  # only texts without a sentence: nothing to generate
                continue
            outs, hits = self._generate([p for _, p in flat], max_new)
            for (k, _), o, h in zip(flat, outs, hits, strict=True):
                translated.setdefault(k, ([], []))
                translated[k][0].append(o)
                translated[k][1].append(h)
        for k, it in enumerate(items):
            # a text of separators only (e.g. "\x1f") has no sentence: an empty translation
            outs, hits = translated.get(k, ([], []))
            results.append({
                "translation": " ".join(o for o in outs if o),
                "source_lang": self.src,
                "target_lang": self.tgt,
                "segments": len(it["pieces"]),
                "truncated": any(hits),
                "model_version": self.bundle.version,
            })
        return results
