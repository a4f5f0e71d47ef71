"""The recommender's REST routes: translation only (path/query/body → request model)."""

from __future__ import annotations

from fastapi import APIRouter, Query

from common.predictor import parse_request
from recommender.schemas import (
    MAX_K,
    EventsRequest,
    EventsResponse,
    RecommendRequest,
    RecommendResponse,
)

__all__ = ["build_router"]


def build_router(served) -> APIRouter:
    router = APIRouter(prefix="/recommender/v1", tags=["recommender"])

    @router.get("/users/{user_id}/recommendations", response_model=RecommendResponse)
    async def recommend(user_id: str, k: int = Query(10, ge=1, le=MAX_K),
                        exclude_seen: bool = True):
        """Top-k items for a user; unknown or empty users get popularity (`fallback`)."""
        req = {"user_id": user_id, "k": k, "exclude_seen": exclude_seen}
        return await served.predict(parse_request(RecommendRequest, req))

    @router.get("/items/{item_id}/similar", response_model=RecommendResponse)
    async def similar(item_id: str, k: int = Query(10, ge=1, le=MAX_K)):
        """Items most like this one (404 for an unknown item)."""
        return await served.predict(parse_request(RecommendRequest, {"item_id": item_id, "k": k}))

    @router.post("/events", response_model=EventsResponse)
    async def events(req: EventsRequest):
        """Record interactions; they are in the seen-filter for the very next request."""
        return await served.call(served.predictor.record_events, req.events)

    return router
