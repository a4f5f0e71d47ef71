"""The thin REST layer: `POST /medical/v1/predict` with a JSON body (base64 image) or a
multipart upload (field `file`, optional form fields `heatmap`, `abstain_threshold`). Both are
turned into the same `PredictRequest`; body-size limits (413) are enforced by the core."""

from __future__ import annotations

import base64
import json
from typing import Any

from fastapi import APIRouter, Request

from common.errors import InvalidInput
from common.predictor import parse_request
from medical_imaging.predictor import PredictRequest, PredictResponse

__all__ = ["build_router"]

_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": PredictRequest.model_json_schema()},
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["file"],
                "properties": {
                    "file": {"type": "string", "format": "binary"},
                    "heatmap": {"type": "boolean"},
                    "abstain_threshold": {"type": "number"},
                }}},
        },
    }
}


def _truthy(value: str | None) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


async def _from_multipart(request: Request) -> PredictRequest:
    form = await request.form()
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise InvalidInput("file", "multipart upload needs one file in the field 'file'")
    data = await upload.read()
    payload: dict[str, Any] = {
        "image_base64": base64.b64encode(data).decode(),
        "filename": upload.filename or "upload",
        "heatmap": _truthy(form.get("heatmap")),
    }
    if form.get("abstain_threshold") not in (None, ""):
        payload["abstain_threshold"] = form.get("abstain_threshold")
    return parse_request(PredictRequest, payload)


async def _from_json(request: Request) -> PredictRequest:
    try:
        payload = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidInput("body", f"not valid JSON ({e.__class__.__name__})") from None
    return parse_request(PredictRequest, payload)


def build_router(served) -> APIRouter:
    router = APIRouter(prefix="/medical/v1", tags=["medical"])

    @router.post("/predict", response_model=PredictResponse, openapi_extra=_BODY_DOC,
                 summary="Calibrated diagnosis of one image (PNG, JPEG, DICOM or NIfTI)")
    async def predict(request: Request):
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            req = await _from_multipart(request)
        else:
            req = await _from_json(request)
        return await served.predict(req)

    return router
