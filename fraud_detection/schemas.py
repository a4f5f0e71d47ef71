"""Request and response models of the fraud API (pydantic v2, unknown fields rejected)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

__all__ = ["Transaction", "Reason", "Score", "BatchRequest", "BatchResponse", "Label",
           "LabelsRequest", "LabelsResponse", "MAX_BATCH"]

MAX_BATCH = 1000
Id = Annotated[StrictInt, Field(ge=0, le=2**62)]


class Transaction(BaseModel):
    """One card authorisation to score."""

    model_config = ConfigDict(extra="forbid")
    transaction_id: Id
    timestamp: datetime = Field(description="ISO 8601, e.g. 2018-08-08T10:15:00 (UTC if no zone)")
    customer_id: Id
    terminal_id: Id
    amount: Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)]


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
