"""The `nlp-translation` vertical: registration, router, training, evaluation, batch scoring."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from common.artifacts import Bundle, fingerprint
from common.errors import InvalidInput
from common.fields import JSON_INT
from common.monitoring.feedback import FeedbackResult
from common.registry import register_vertical
from common.serving.openapi import model_errors
from common.vertical import ExampleRequest, Vertical
from nlp.data import parallel_file, read_parallel
from nlp.embedded import parallel_phrases
from nlp.http_schemas import ONE_TEXT_OR_TEXTS, absent_by_default, http_text, one_text_or_texts
from nlp.monitoring import TranslationFeedbackRequest
from nlp.translation_eval import evaluate_translation
from nlp.translation_predictor import (
    MAX_CHARS,
    TranslationPredictor,
    TranslationRequest,
    TranslationResponse,
)
from nlp.translation_train import TranslationConfig, fit_translation, publish_translation

__all__ = ["TranslationVertical", "TranslateHTTPRequest", "TranslateBatchResponse"]
MAX_TEXTS = 64
MAX_NEW_TOKENS = 512
HttpText = http_text(MAX_CHARS)
# Lower-case codes as the bundle names them (en, de, pt-br); the served pair is an `enum` in the
# OpenAPI document once the model is loaded (`openapi_schema_updates`)
HttpLang = Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}(-[a-z0-9]{2,8})?$")]


class TranslateHTTPRequest(BaseModel):
    """One `text` (answer: one result) or `texts` (answer: {"translations": [...]})."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=ONE_TEXT_OR_TEXTS)
    text: HttpText = absent_by_default(description="one text (1..5,000 characters)")
    texts: list[HttpText] = absent_by_default(min_length=1, max_length=MAX_TEXTS,
                                              description="up to 64 texts, answered in order")
    source_lang: HttpLang
    target_lang: HttpLang
    max_new_tokens: Annotated[int, Field(ge=1, le=MAX_NEW_TOKENS), JSON_INT] | None = Field(
        None, description="output tokens per sentence (default: the bundle's)")


class TranslateBatchResponse(BaseModel):
    translations: list[TranslationResponse]


@register_vertical("nlp-translation")
class TranslationVertical(Vertical):
    title = "machine translation (Marian seq2seq, beam search)"
    predictor_cls = TranslationPredictor
    monitor_task = "translation"  # score: output/input length ratio (nlp/monitoring.py)
    protocols = ("multi30k",)
    resumable_training = True

    def build_router(self, served) -> APIRouter:
        router = APIRouter(prefix="/nlp/v1", tags=["nlp"])

        @router.post("/translate", response_model=TranslationResponse | TranslateBatchResponse,
                     operation_id="nlpTranslate", responses=model_errors())
        async def translate(req: TranslateHTTPRequest):
            one_text_or_texts(req.text, req.texts)
            common = {"source_lang": req.source_lang, "target_lang": req.target_lang,
                      "max_new_tokens": req.max_new_tokens}
            if req.text is not None:
                return await served.predict(TranslationRequest(text=req.text, **common))
            reqs = [TranslationRequest(text=t, **common) for t in req.texts]
            return TranslateBatchResponse(translations=await served.predict_many(reqs))

        top = APIRouter(tags=["nlp"])
        top.include_router(router)

        @top.post("/translation/v1/feedback", response_model=FeedbackResult,
                  operation_id="translationFeedback", responses=model_errors(),
                  summary="Corrected translations of earlier answers")
        async def feedback(req: TranslationFeedbackRequest):
            """Corrected translations after the fact, joined to the prediction log by request
            id (monitoring's realised chrF); unknown ids are counted, never an error."""
            items = [{"id": it.id, "label": it.label} for it in req.feedback]
            return await served.feedback(items)

        return top

    def openapi_schema_updates(self, predictor: TranslationPredictor) -> dict[str, Any]:
        """The served bundle's language pair (enums) and output length limit."""
        return {"TranslateHTTPRequest": {
            "source_lang": {"enum": [predictor.src]},
            "target_lang": {"enum": [predictor.tgt]},
            "max_new_tokens": {"maximum": min(MAX_NEW_TOKENS, predictor.max_new_tokens_limit)},
        }}

    def example_requests(self) -> list[ExampleRequest]:
        out = []
        for text in ("A dog is running in the park.",
                     "A woman is reading on a bench. A child is playing in the garden."):
            p = {"text": text, "source_lang": "en", "target_lang": "de"}
            out.append(ExampleRequest(payload=p, method="POST", path="/nlp/v1/translate", body=p))
        return out

    # ---- training -----------------------------------------------------------------------
    def train_default(self, root: Path, preset: str = "demo") -> Bundle:
        """The embedded en→de caption phrases (shows the path; not a real translator)."""
        src, tgt = parallel_phrases()
        n_val = 32
        cfg = TranslationConfig.preset("test" if preset == "test" else "demo")
        fit = fit_translation(src[n_val:], tgt[n_val:], cfg, val=(src[:n_val], tgt[:n_val]))
        return publish_translation(fit, root, fingerprint("nlp.embedded.parallel", src, tgt),
                                   "embedded en-de caption phrases")

    def add_train_args(self, parser: argparse.ArgumentParser) -> None:
        _lang_args(parser)
        parser.add_argument("--checkpoint", default=None,
                            help="start from this HF seq2seq folder or cached hub id "
                                 "(e.g. Helsinki-NLP/opus-mt-en-de) instead of from scratch")
        parser.add_argument("--epochs", type=int, default=None,
                            help="0 with --checkpoint: package it without training")

    def train(self, args: argparse.Namespace) -> Bundle:
        if not args.data and not args.checkpoint:
            return self.train_default(Path(args.root), args.preset)
        preset = args.preset if args.preset in ("test", "quick", "full") else "quick"
        cfg = TranslationConfig.preset(preset, src=args.src, tgt=args.tgt, epochs=args.epochs,
                                       checkpoint=args.checkpoint, device=args.device)
        if args.data:
            src, tgt = read_parallel(args.data, "train", args.src, args.tgt)
            try:
                val = read_parallel(args.data, "val", args.src, args.tgt)
            except InvalidInput:
                val = None
            fp = fingerprint([parallel_file(args.data, "train", x) for x in (args.src, args.tgt)])
        else:
            src, tgt, val, fp = [], [], None, fingerprint("checkpoint", args.checkpoint)
            cfg.epochs = 0
        fit = fit_translation(src, tgt, cfg, val=val, out_dir=getattr(args, "work_dir", None))
        return publish_translation(fit, args.root, fp, str(args.data or args.checkpoint))

    # ---- evaluation ---------------------------------------------------------------------
    def add_evaluate_args(self, parser: argparse.ArgumentParser) -> None:
        _lang_args(parser)
        parser.add_argument("--test-prefix", default="test_2016_flickr",
                            help="report on <prefix>.<src/tgt>.gz in --data")
        parser.add_argument("--checkpoint", default=None, help="fine-tune this checkpoint")
        parser.add_argument("--epochs", type=int, default=None)
        parser.add_argument("--num-beams", type=int, default=None)
        parser.add_argument("--length-penalty", type=float, default=None)
        parser.add_argument("--tune-decoding", action="store_true",
                            help="choose beam size and length penalty on DIR/val before "
                                 "translating the test split (6 extra val decodes)")

    def evaluate(self, args: argparse.Namespace) -> dict[str, Any]:
        return evaluate_translation(args)

    gate_metric = "bleu"

    def gate_score(self, bundle: Bundle, data: Path, args) -> dict[str, float]:
        from nlp.translation_gate import gate_score

        return gate_score(bundle, data, args)

    # ---- batch scoring ------------------------------------------------------------------
    def add_score_args(self, parser: argparse.ArgumentParser) -> None:
        _lang_args(parser)
        parser.add_argument("--text-column", default="text", help="column holding the text")
        parser.add_argument("--num-beams", type=int, default=None)
        parser.add_argument("--length-penalty", type=float, default=None)

    def predictor_options(self, args: argparse.Namespace) -> dict[str, Any]:
        opts = {"num_beams": getattr(args, "num_beams", None),
                "length_penalty": getattr(args, "length_penalty", None)}
        return {k: v for k, v in opts.items() if v is not None}

    def row_to_payload(self, row: dict[str, Any], args: argparse.Namespace | None) -> Any:
        if args is None:  # rows that are already requests (JSONL of payloads)
            return row
        col = args.text_column
        if col not in row:
            raise InvalidInput("text_column", f"no column {col!r} in the input")
        return {"text": row[col], "source_lang": row.get("source_lang") or args.src,
                "target_lang": row.get("target_lang") or args.tgt}


def _lang_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--src", default="en", help="source language code")
    parser.add_argument("--tgt", default="de", help="target language code")
