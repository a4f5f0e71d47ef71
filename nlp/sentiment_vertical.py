"""The `nlp-sentiment` vertical: registration, router, training, evaluation and batch scoring."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, StringConstraints

from common.artifacts import Bundle, fingerprint
from common.errors import InvalidInput
from common.monitoring.feedback import FeedbackResult, class_labels
from common.registry import register_vertical
from common.serving.openapi import model_errors
from common.vertical import ExampleRequest, Vertical
from nlp.data import load_labelled
from nlp.embedded import sentiment_examples
from nlp.http_schemas import ONE_TEXT_OR_TEXTS, absent_by_default, http_text, one_text_or_texts
from nlp.monitoring import SentimentFeedbackRequest
from nlp.sentiment_eval import evaluate_sentiment
from nlp.sentiment_predictor import (
    MAX_CHARS,
    TEXT_ID_DOC,
    SentimentPredictor,
    SentimentRequest,
    SentimentResponse,
)
from nlp.sentiment_train import SentimentConfig, fit_sentiment, publish_sentiment

__all__ = ["SentimentVertical", "SentimentHTTPRequest", "SentimentBatchResponse"]
MAX_TEXTS = 256
HttpText = http_text(MAX_CHARS)
TextId = Annotated[str, StringConstraints(min_length=1, max_length=128)]


# `text_id` names one `text`: a list of `texts` is logged under its request id
_ONE_TEXT_OR_TEXTS = {**ONE_TEXT_OR_TEXTS, "not": {"required": ["texts", "text_id"]}}


class SentimentHTTPRequest(BaseModel):
    """Either one `text` (answer: one result) or `texts` (answer: {"results": [...]})."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_ONE_TEXT_OR_TEXTS)
    text: HttpText = absent_by_default(description="one text (1..10,000 characters)")
    text_id: TextId = absent_by_default(description=TEXT_ID_DOC)
    texts: list[HttpText] = absent_by_default(min_length=1, max_length=MAX_TEXTS,
                                              description="up to 256 texts, answered in order")


class SentimentBatchResponse(BaseModel):
    results: list[SentimentResponse]


@register_vertical("nlp-sentiment")
class SentimentVertical(Vertical):
    title = "sentiment classification (fine-tuned MiniLM, calibrated)"
    predictor_cls = SentimentPredictor
    monitor_task = "binary"  # P(positive); a multi-class bundle's profile says "multiclass"
    protocols = ("holdout",)
    resumable_training = True

    def build_router(self, served) -> APIRouter:
        router = APIRouter(prefix="/nlp/v1", tags=["nlp"])

        @router.post("/sentiment", response_model=SentimentResponse | SentimentBatchResponse,
                     operation_id="nlpSentiment", responses=model_errors())
        async def sentiment(req: SentimentHTTPRequest):
            one_text_or_texts(req.text, req.texts)
            if req.text is not None:
                return await served.predict(SentimentRequest(text=req.text, text_id=req.text_id))
            if req.text_id is not None:
                raise InvalidInput("text_id", "names one `text`; not allowed with `texts`")
            results = await served.predict_many([SentimentRequest(text=t) for t in req.texts])
            return SentimentBatchResponse(results=results)

        top = APIRouter(tags=["nlp"])
        top.include_router(router)

        @top.post("/sentiment/v1/feedback", response_model=FeedbackResult,
                  operation_id="sentimentFeedback", responses=model_errors(),
                  summary="True labels of earlier sentiment answers")
        async def feedback(req: SentimentFeedbackRequest):
            """Labels after the fact, joined to the prediction log by text_id or request id
            (monitoring's realised accuracy); unknown ids are counted, never an error."""
            return await served.feedback(
                class_labels(req.feedback, list(served.predictor.labels)))

        return top

    def openapi_schema_updates(self, predictor: SentimentPredictor) -> dict[str, Any]:
        """Feedback labels are the served bundle's class names."""
        return {"SentimentFeedbackItem": {"label": {"enum": list(predictor.labels)}}}

    def example_requests(self) -> list[ExampleRequest]:
        out = []
        for text in ("The support team was fast and friendly.",
                     "The refund process was slow and disappointing."):
            out.append(ExampleRequest(payload={"text": text}, method="POST",
                                      path="/nlp/v1/sentiment", body={"text": text}))
        return out

    # ---- training -----------------------------------------------------------------------
    def train_default(self, root: Path, preset: str = "demo") -> Bundle:
        """The embedded template reviews: a tiny BERT for 'test', MiniLM for 'demo'."""
        texts, labels = sentiment_examples(600 if preset != "test" else 240)
        fit = fit_sentiment(texts, labels, SentimentConfig.preset(preset))
        return publish_sentiment(fit, root, fingerprint("nlp.embedded.sentiment", texts, labels),
                                 "embedded template reviews")

    def add_train_args(self, parser: argparse.ArgumentParser) -> None:
        _data_args(parser)
        parser.add_argument("--backbone", default=None,
                            help="'minilm' (default), 'tiny', a local HF folder or a hub id")
        parser.add_argument("--epochs", type=int, default=None)
        parser.add_argument("--max-length", type=int, default=None, help="tokens per text")

    def train(self, args: argparse.Namespace) -> Bundle:
        if not args.data:
            return self.train_default(Path(args.root), args.preset)
        texts, labels = load_labelled(args.data, args.text_column, args.label_column)
        names = args.label_names.split(",") if args.label_names else None
        preset = args.preset if args.preset in ("test", "quick", "full") else "quick"
        cfg = SentimentConfig.preset(preset, backbone=args.backbone, epochs=args.epochs,
                                     max_length=args.max_length, device=args.device)
        fit = fit_sentiment(texts, labels, cfg, label_names=names,
                            out_dir=getattr(args, "work_dir", None))
        return publish_sentiment(fit, args.root, fingerprint(Path(args.data)), str(args.data))

    # ---- evaluation ---------------------------------------------------------------------
    def add_evaluate_args(self, parser: argparse.ArgumentParser) -> None:
        _data_args(parser)
        parser.add_argument("--eval", default=None, help="labelled file to report on")
        parser.add_argument("--backbone", default=None, help="default: minilm")
        parser.add_argument("--epochs", type=int, default=None)
        parser.add_argument("--max-length", type=int, default=None)
        parser.add_argument("--train-limit", type=int, default=None,
                            help="train rows used (default: 8000 for quick, all for full)")
        parser.add_argument("--no-baseline", action="store_true",
                            help="skip the frozen-embedding + logistic regression baseline")

    def evaluate(self, args: argparse.Namespace) -> dict[str, Any]:
        return evaluate_sentiment(args)

    gate_metric = "accuracy"

    def gate_score(self, bundle: Bundle, data: Path, args) -> dict[str, float]:
        from nlp.sentiment_gate import gate_score

        return gate_score(bundle, data, args)

    # ---- batch scoring ------------------------------------------------------------------
    def add_score_args(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--text-column", default="text", help="column holding the text")
        parser.add_argument("--quantize", action="store_true", help="int8 dynamic (CPU)")

    def predictor_options(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"quantize": True} if getattr(args, "quantize", False) else {}

    def row_to_payload(self, row: dict[str, Any], args: argparse.Namespace | None) -> Any:
        col = getattr(args, "text_column", None) or "text"
        if col not in row:
            raise InvalidInput("text_column", f"no column {col!r} in the input")
        return {"text": row[col]}


def _data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text-column", default=None, help="default: text/sentence/review/...")
    parser.add_argument("--label-column", default=None, help="default: label/sentiment/...")
    parser.add_argument("--label-names", default=None,
                        help="comma-separated names for the sorted label values, e.g. "
                             "negative,positive for SST-2's 0,1")
