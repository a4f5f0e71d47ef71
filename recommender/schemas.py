"""Request and response models of the recommender (pydantic v2, requests forbid extra keys).

User and item ids are strings; JSON integers are accepted too (CSV/Parquet batch inputs and
some clients send numeric ids) and documented as such. Event timestamps follow the suite's one
convention (`common.fields.Timestamp`: ISO 8601 or epoch seconds)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from common.fields import MAX_SAFE_INT, Timestamp

__all__ = ["RecommendRequest", "RecommendResponse", "ScoredItem", "Event", "EventsRequest",
           "EventsResponse", "MAX_K", "MAX_ID_CHARS", "ExternalId"]
MAX_K = 1000
MAX_ID_CHARS = 256


def _as_id(v):
    # ids arrive as JSON numbers from CSV/Parquet batch inputs and some clients: ids are strings
    if isinstance(v, bool):
        raise PydanticCustomError("id_type", "must be a string or integer id")
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, int):
        if abs(v) > MAX_SAFE_INT:  # the integer range the schema documents
            raise PydanticCustomError("id_range", "an integer id must be within ±(2**53-1)")
        return str(v)
    return v


ExternalId = Annotated[
    str,
    Field(min_length=1, max_length=MAX_ID_CHARS),
    BeforeValidator(_as_id),
    WithJsonSchema({"anyOf": [
        {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS},
        {"type": "integer", "minimum": -MAX_SAFE_INT, "maximum": MAX_SAFE_INT},
    ]}),
]


class RecommendRequest(BaseModel):
    """Top-k for a user (`user_id`) or items similar to an item (`item_id`): exactly one."""

    model_config = ConfigDict(extra="forbid")
    user_id: ExternalId | None = None
    item_id: ExternalId | None = None
    k: int = Field(10, ge=1, le=MAX_K, description="number of items to return")
    exclude_seen: bool = Field(True, description="drop items the user already interacted with")

    @model_validator(mode="after")
    def _one_target(self):
        if (self.user_id is None) == (self.item_id is None):
            raise ValueError("give exactly one of user_id (recommendations) or item_id (similar)")
        return self


class ScoredItem(BaseModel):
    item_id: str
    score: float
    title: str | None = None


class RecommendResponse(BaseModel):
    user_id: str | None = None
    item_id: str | None = None
    items: list[ScoredItem]
    fallback: Literal["popularity"] | None = Field(
        None, description="set when the model could not personalise and popularity answered")
    reason: str | None = Field(None, description="why the fallback (or fewer items) happened")
    model: str
    model_version: str


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: ExternalId
    item_id: ExternalId
    timestamp: Timestamp | None = None


class EventsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[Event] = Field(min_length=1, max_length=10_000)


class EventsResponse(BaseModel):
    accepted: int = Field(description="new (user, item) interactions now in the seen-filter")
    duplicates: int = Field(description="events for pairs already seen (idempotent)")
    unknown_items: list[str] = Field(description="item ids not in the catalogue (ignored)")
    users_updated: int
