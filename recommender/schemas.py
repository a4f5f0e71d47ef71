"""Request and response models of the recommender (pydantic v2, requests forbid extra keys)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["RecommendRequest", "RecommendResponse", "ScoredItem", "Event", "EventsRequest",
           "EventsResponse", "MAX_K"]
MAX_K = 1000


def _as_id(v):
    # ids arrive as JSON numbers from CSV/Parquet batch inputs and some clients: ids are strings
    if isinstance(v, bool):
        raise ValueError("must be a string or integer id")
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return v


class RecommendRequest(BaseModel):
    """Top-k for a user (`user_id`) or items similar to an item (`item_id`): exactly one."""

    model_config = ConfigDict(extra="forbid")
    user_id: str | None = Field(None, min_length=1, max_length=256)
    item_id: str | None = Field(None, min_length=1, max_length=256)
    k: int = Field(10, ge=1, le=MAX_K, description="number of items to return")
    exclude_seen: bool = Field(True, description="drop items the user already interacted with")

    _ids = field_validator("user_id", "item_id", mode="before")(_as_id)

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
    user_id: str = Field(min_length=1, max_length=256)
    item_id: str = Field(min_length=1, max_length=256)
    timestamp: int | None = None

    _ids = field_validator("user_id", "item_id", mode="before")(_as_id)


class EventsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[Event] = Field(min_length=1, max_length=10_000)


class EventsResponse(BaseModel):
    accepted: int = Field(description="new (user, item) interactions now in the seen-filter")
    duplicates: int = Field(description="events for pairs already seen (idempotent)")
    unknown_items: list[str] = Field(description="item ids not in the catalogue (ignored)")
    users_updated: int
