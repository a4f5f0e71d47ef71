"""Request and response models of the fraud API (pydantic v2, unknown fields rejected).

Field types come from `common.fields`, so the OpenAPI document states exactly what is accepted:
ids are integers in 0..2**53-1, `amount` a JSON number in 0..1e9 (never a boolean or a string),
`timestamp` ISO 8601 or epoch seconds (the one convention of every vertical)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from common.fields import JSON_NUMBER, Id, Timestamp
from common.monitoring.feedback import FeedbackResult

__all__ = ["Transaction", "Reason", "Score", "BatchRequest", "BatchResponse", "Label",
           "LabelsRequest", "LabelsResponse", "MAX_BATCH", "MAX_AMOUNT"]

MAX_BATCH = 1000
MAX_AMOUNT = 1e9


class Transaction(BaseModel):
    """One card authorisation to score."""

    model_config = ConfigDict(extra="forbid")
    transaction_id: Id
    timestamp: Timestamp
    customer_id: Id
    terminal_id: Id
    amount: Annotated[float, Field(ge=0, le=MAX_AMOUNT, allow_inf_nan=False,
                                   description="in the card's currency"), JSON_NUMBER]


class Reason(BaseModel):
    code: str
    feature: str
    value: float
    contribution: float = Field(description="TreeSHAP contribution in log-odds")


class Score(BaseModel):
    transaction_id: int
    probability: float
    decision: Literal["allow", "review", "block"]
    reasons: list[Reason]
    model_version: str


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    transactions: list[Transaction] = Field(min_length=1, max_length=MAX_BATCH)


class BatchResponse(BaseModel):
    results: list[Score]


class Label(BaseModel):
    model_config = ConfigDict(extra="forbid")
    transaction_id: Id
    fraud: StrictBool


class LabelsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    labels: list[Label] = Field(min_length=1, max_length=100_000)


class LabelsResponse(BaseModel):
    updated: int
    unknown: list[int] = Field(description="ids no longer (or never) in the feature store")
    feedback: FeedbackResult | None = Field(
        None, description="the same labels as monitoring feedback; null when monitoring is off")
