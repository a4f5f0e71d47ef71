"""Sentiment Predictor: one text → label, calibrated probabilities for every label, the token
count and whether the text was truncated to the model's max length."""

from __future__ import annotations

from typing import Annotated, Any

import torch
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from common.calibration import apply_temperature
from common.predictor import Predictor
from nlp.hf import rebuild
from nlp.monitoring import first_row, sentiment_features
from nlp.sentiment_model import batched_outputs, encode

__all__ = [
    "SentimentRequest",
    "SentimentResponse",
    "SentimentPredictor",
    "MAX_CHARS",
    "Text",
    "quantize_dynamic",
]

MAX_CHARS = 10_000  # a hard limit (422); below it, long texts are truncated to max_length tokens
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_CHARS)]
TEXT_ID_DOC = ("your id for this text (1..128 characters): echoed, logged, and the id to send "
               "its true label to /sentiment/v1/feedback by")


class SentimentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: Text = Field(description="the text to classify (1..10,000 characters)")
    text_id: str | None = Field(None, min_length=1, max_length=128, description=TEXT_ID_DOC)


class SentimentResponse(BaseModel):
    text_id: str | None = Field(None, description="the request's text_id, echoed")
    label: str
    probabilities: dict[str, float] = Field(description="calibrated, one per label, sum to 1")
    num_tokens: int = Field(description="tokens in the text incl. special tokens, before cutting")
    truncated: bool = Field(description="true when only the first max_tokens tokens were read")
    max_tokens: int
    model_version: str


def quantize_dynamic(model: torch.nn.Module) -> torch.nn.Module:
    """int8 dynamic quantisation of the Linear layers (CPU serving)."""
    import warnings

    from torch.ao.quantization import quantize_dynamic as qd

    with warnings.catch_warnings():  # torch.ao eager quantisation warns it is deprecated
        warnings.simplefilter("ignore")
        return qd(model, {torch.nn.Linear}, dtype=torch.qint8)


class SentimentPredictor(Predictor):
    """Options: `quantize=True` serves an int8 dynamically quantised model (CPU)."""

    vertical = "nlp-sentiment"
    request_model = SentimentRequest
    response_model = SentimentResponse
    max_batch_size = 64
    max_wait_ms = 5.0
    batch_job_size = 256

    def setup(self, device: torch.device) -> None:
        from transformers import AutoModelForSequenceClassification

        meta = self.bundle.read_json("sentiment.json")
        self.labels: list[str] = meta["labels"]
        self.temperature = float(meta["temperature"])
        self.max_length = int(meta["max_length"])
        if self.options.get("quantize"):
            device = torch.device("cpu")  # int8 dynamic kernels are CPU kernels
        self.device = device
        self.model, self.tokenizer = rebuild(
            self.bundle, AutoModelForSequenceClassification, device
        )
        if self.options.get("quantize"):
            self.model = quantize_dynamic(self.model)

    def predict_batch(self, items: list[SentimentRequest]) -> list[dict[str, Any]]:
        texts = [r.text for r in items]
        ids, counts = encode(self.tokenizer, texts, self.max_length)
        logits, emb = batched_outputs(self.model, self.tokenizer, ids, self.device)
        probs = apply_temperature(logits, self.temperature)
        out = []
        for r, p, n, seq, e in zip(items, probs, counts, ids, emb, strict=True):
            # 6 decimals: stable JSON, and no float noise between runtimes in the answer
            rounded = {lab: round(float(v), 6) for lab, v in zip(self.labels, p, strict=True)}
            out.append({
                "label": self.labels[int(p.argmax())],
                "probabilities": rounded,
                "num_tokens": n,
                "truncated": n > self.max_length,
                "max_tokens": self.max_length,
                "model_version": self.bundle.version,
                "text_id": r.text_id,
                # for monitor_record (encode drops them): what the model read, its embedding
                "_ids": seq,
                "_embedding": e,
            })
        return out

    def monitor_record(self, request: SentimentRequest, output: dict[str, Any],
                       response: SentimentResponse) -> dict[str, Any]:
        """Token count, unknown-token rate, truncation, pooled embedding (nlp.monitoring);
        the score is P(positive)."""
        feats = first_row(sentiment_features([output["_ids"]], [response.num_tokens],
                                             self.max_length, self.tokenizer.unk_token_id,
                                             output["_embedding"][None]))
        probs = [response.probabilities[lab] for lab in self.labels]
        score = probs[1] if len(probs) == 2 else max(probs)  # P(classes[1]) when binary
        return {"id": request.text_id, "features": feats, "score": score, "probs": probs,
                "prediction": response.label}
