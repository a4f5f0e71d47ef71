"""The recommender's REST routes: translation only (path/query/body → request model).

OpenAPI links tie the routes together for clients (and the stateful fuzz): the users in posted
events → their recommendations; a recommended item → items similar to it, or an event for it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError
from starlette.convertors import Convertor, register_url_convertor

from common.monitoring.feedback import FeedbackResult
from common.predictor import parse_request
from common.serving.openapi import model_errors
from recommender.monitoring import RecommenderFeedbackRequest
from recommender.schemas import (
    MAX_ID_CHARS,
    MAX_K,
    EventsRequest,
    EventsResponse,
    RecommendRequest,
    RecommendResponse,
)

__all__ = ["build_router"]


class _AnyId(Convertor):
    """A path segment holding any id an event may carry: "/" (sent as %2F, decoded before
    routing) and newlines included; Starlette's `str` stops at "/" and its `path` at "\n"."""

    regex = r"[\s\S]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("any_id", _AnyId())


def _query_bool(v):
    # Lax pydantic also takes 1/0/yes/on/t...: the schema says boolean, i.e. true or false
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v in ("true", "false"):
        return v == "true"
    raise PydanticCustomError("bool_parsing", "must be true or false")


UserId = Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS)]
ItemId = Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS)]
K = Annotated[int, Query(ge=1, le=MAX_K, description="number of items to return")]
ExcludeSeen = Annotated[bool, Query(description="drop items the user already interacted with"),
                        BeforeValidator(_query_bool)]

_ITEM = "$response.body#/items/0/item_id"
_RECOMMEND_LINKS = {200: {"links": {
    "SimilarToTopItem": {"operationId": "recommenderSimilar", "parameters": {"item_id": _ITEM}},
    "RecordTopItemSeen": {"operationId": "recommenderEvents", "requestBody": {
        "events": [{"user_id": "$response.body#/user_id", "item_id": _ITEM}]}},
}}}
_SIMILAR_LINKS = {200: {"links": {
    "SimilarToTopItem": {"operationId": "recommenderSimilar", "parameters": {"item_id": _ITEM}},
}}}
_EVENTS_LINKS = {200: {"links": {
    "RecommendForEventUser": {"operationId": "recommenderRecommend",
                              "parameters": {"user_id": "$request.body#/events/0/user_id"}},
}}}


def build_router(served) -> APIRouter:
    router = APIRouter(prefix="/recommender/v1", tags=["recommender"])

    @router.get("/users/{user_id:any_id}/recommendations", response_model=RecommendResponse,
                operation_id="recommenderRecommend",
                responses={**model_errors(), **_RECOMMEND_LINKS})
    async def recommend(user_id: UserId, k: K = 10, exclude_seen: ExcludeSeen = True):
        """Top-k items for a user; unknown or empty users get popularity (`fallback`)."""
        req = {"user_id": user_id, "k": k, "exclude_seen": exclude_seen}
        return await served.predict(parse_request(RecommendRequest, req))

    @router.get("/items/{item_id:any_id}/similar", response_model=RecommendResponse,
                operation_id="recommenderSimilar",
                responses={**model_errors(404), **_SIMILAR_LINKS})
    async def similar(item_id: ItemId, k: K = 10):
        """Items most like this one (404 for an unknown item)."""
        return await served.predict(parse_request(RecommendRequest, {"item_id": item_id, "k": k}))

    @router.post("/events", response_model=EventsResponse, operation_id="recommenderEvents",
                 responses={**model_errors(), **_EVENTS_LINKS})
    async def events(req: EventsRequest):
        """Record interactions; they are in the seen-filter for the very next request."""
        return await served.call(served.predictor.record_events, req.events)

    @router.post("/feedback", response_model=FeedbackResult, operation_id="recommenderFeedback",
                 responses=model_errors())
    async def feedback(req: RecommenderFeedbackRequest):
        """The item each user then interacted with, joined to the logged recommendations by
        user id or request id (monitoring's realised hit rate); unknown ids are counted, never
        an error. (Record the interaction itself on /events.)"""
        items = [{"id": it.id, "label": it.label} for it in req.feedback]
        return await served.feedback(items)

    return router
