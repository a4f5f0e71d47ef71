"""The fraud REST routes: translation only (the predictor does the work).

POST /fraud/v1/score        one Transaction → Score
POST /fraud/v1/score:batch  {"transactions": [...]} (≤ 1000, scored in order) → {"results"}
POST /fraud/v1/labels       {"labels": [{"transaction_id", "fraud"}]} → {"updated", "unknown"}
"""

from __future__ import annotations

from fastapi import APIRouter

from common.serving.openapi import model_errors
from fraud_detection.monitoring import forward_feedback
from fraud_detection.schemas import (
    BatchRequest,
    BatchResponse,
    LabelsRequest,
    LabelsResponse,
    Score,
    Transaction,
)

__all__ = ["build_router"]

# OpenAPI links: a scored transaction's id feeds the labels route (clients and the stateful fuzz
# follow them)
_LABEL_IT = {"operationId": "fraudLabels", "description": "report the outcome of this transaction"}
_SCORE_LINKS = {200: {"links": {"LabelTransaction": {**_LABEL_IT, "requestBody": {
    "labels": [{"transaction_id": "$response.body#/transaction_id", "fraud": True}]}}}}}
_BATCH_LINKS = {200: {"links": {"LabelFirstTransaction": {**_LABEL_IT, "requestBody": {
    "labels": [{"transaction_id": "$response.body#/results/0/transaction_id", "fraud": False}]}}}}}


def build_router(served) -> APIRouter:
    router = APIRouter(prefix="/fraud/v1", tags=["fraud"])

    @router.post("/score", response_model=Score, operation_id="fraudScore",
                 responses={**model_errors(), **_SCORE_LINKS})
    async def score(tx: Transaction):
        return await served.predict(tx)

    @router.post("/score:batch", response_model=BatchResponse, operation_id="fraudScoreBatch",
                 responses={**model_errors(), **_BATCH_LINKS})
    async def score_batch(req: BatchRequest):
        # one predict_batch call keeps the list's order: item k sees items < k in the store
        results = await served.call(served.predictor.run_ordered, req.transactions)
        return BatchResponse(results=results)

    @router.post("/labels", response_model=LabelsResponse, operation_id="fraudLabels",
                 responses=model_errors())
    async def labels(req: LabelsRequest):
        pairs = [(lab.transaction_id, lab.fraud) for lab in req.labels]
        updated, unknown = await served.call(served.predictor.apply_labels, pairs)
        fed = await forward_feedback(served, [{"id": str(t), "label": f} for t, f in pairs])
        return LabelsResponse(updated=updated, unknown=unknown, feedback=fed)

    return router
