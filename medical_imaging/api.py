"""The thin REST layer: `POST /medical/v1/predict` with a JSON body (base64 image) or a
multipart upload (field `file`, optional form fields `heatmap`, `abstain_threshold`, `time_index`,
`series_uid`, `window_center`, `window_width`, `case_id`). The file may be a 2D image or, for a 3D
model, a NIfTI volume or a zip of one DICOM series' slices. Both are
turned into the same `PredictRequest`; body-size and part-count limits (413) are enforced by the
core. Both bodies are validated as strictly as the OpenAPI document describes them: booleans are
`true`/`false`, numbers are numbers, unknown fields are refused. That the bytes are a readable
image (PNG, JPEG, DICOM, NIfTI) no schema can say: the predictor answers 422 when they are not."""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import Field, StrictBool
from starlette.datastructures import UploadFile

from common.errors import InvalidInput
from common.fields import JSON_INT, JSON_NUMBER
from common.monitoring.feedback import FeedbackResult, class_labels
from common.predictor import parse_request
from common.serving.openapi import model_errors
from medical_imaging.monitoring import MedicalFeedbackRequest
from medical_imaging.predictor import PredictRequest, PredictResponse

__all__ = ["build_router", "PredictHTTPRequest"]
_FORM_FIELDS = ("file", "heatmap", "abstain_threshold", "case_id", "time_index", "series_uid",
                "window_center", "window_width")
_FORM_NUMBERS = ("abstain_threshold", "window_center", "window_width")


class PredictHTTPRequest(PredictRequest):
    """The JSON body: `PredictRequest` with the types the wire format can check."""

    image_base64: str = Field(
        min_length=1, json_schema_extra={"format": "byte"},
        description="the file's bytes (PNG, JPEG, DICOM or NIfTI; at least 2x2 pixels), base64")
    heatmap: StrictBool = Field(False, description="also return a Grad-CAM overlay PNG (base64)")
    abstain_threshold: Annotated[float, Field(ge=0.0, le=1.0), JSON_NUMBER] | None = Field(
        None, description="abstain below this confidence (default: the bundle's)")
    time_index: Annotated[int, Field(ge=0), JSON_INT] = Field(
        0, description="4D NIfTI: the time point to use (default 0)")
    window_center: Annotated[float, Field(ge=-1e9, le=1e9), JSON_NUMBER] | None = Field(
        None, description="DICOM window centre (default: the file's, else the data's middle)")
    window_width: Annotated[float, Field(gt=1.0, le=1e9), JSON_NUMBER] | None = \
        Field(None, description="DICOM window width (default: the file's, else the data's range)")


_MULTIPART_SCHEMA = {
    "type": "object", "required": ["file"], "additionalProperties": False,
    "properties": {
        "file": {"type": "string", "format": "binary",
                 "description": "the image file (PNG, JPEG, DICOM or NIfTI; at least 2x2 "
                                "pixels), or for a 3D model a NIfTI volume or a zip of DICOM "
                                "slices"},
        "heatmap": {"type": "boolean", "description": "true or false (default false)"},
        "abstain_threshold": {"type": "number", "minimum": 0, "maximum": 1},
        "case_id": {"type": "string", "minLength": 1, "maxLength": 128},
        "time_index": {"type": "integer", "minimum": 0, "description": "4D NIfTI time point"},
        "series_uid": {"type": "string", "minLength": 1, "maxLength": 64,
                       "description": "the series to use from a zip holding several"},
        "window_center": {"type": "number", "minimum": -1e9, "maximum": 1e9},
        "window_width": {"type": "number", "exclusiveMinimum": 1, "maximum": 1e9},
    },
}
_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": PredictHTTPRequest.model_json_schema()},
            "multipart/form-data": {"schema": _MULTIPART_SCHEMA},
        },
    }
}


def _form_bool(value: str) -> bool:
    if value not in ("true", "false"):
        raise InvalidInput("heatmap", "must be true or false")
    return value == "true"


def _form_number(value: str, field: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise InvalidInput(field, "must be a number") from None


def _form_int(value: str, field: str) -> int:
    if not value.isdigit():
        raise InvalidInput(field, "must be a whole number >= 0")
    return int(value)


async def _from_multipart(request: Request) -> PredictRequest:
    form = await request.form()
    unknown = sorted(set(form.keys()) - set(_FORM_FIELDS))
    if unknown:
        raise InvalidInput(unknown[0], f"unknown form field; expected {', '.join(_FORM_FIELDS)}")
    for name in _FORM_FIELDS:
        if len(form.getlist(name)) > 1:
            raise InvalidInput(name, "given more than once")
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidInput("file", "multipart upload needs one file in the field 'file'")
    payload: dict[str, Any] = {
        "image_base64": base64.b64encode(await upload.read()).decode(),
        "filename": (upload.filename or "upload")[:255],  # only names the file in messages
    }
    for name in _FORM_FIELDS[1:]:
        value = form.get(name)
        if isinstance(value, UploadFile):
            raise InvalidInput(name, "must be a plain form field, not a file")
        if value is not None:
            payload[name] = (_form_bool(value) if name == "heatmap"
                             else _form_number(value, name) if name in _FORM_NUMBERS
                             else _form_int(value, name) if name == "time_index" else value)
    return parse_request(PredictHTTPRequest, payload)


async def _from_json(request: Request) -> PredictRequest:
    try:
        payload = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidInput("body", f"not valid JSON ({e.__class__.__name__})") from None
    return parse_request(PredictHTTPRequest, payload)


def build_router(served) -> APIRouter:
    router = APIRouter(prefix="/medical/v1", tags=["medical"])

    @router.post("/predict", response_model=PredictResponse, openapi_extra=_BODY_DOC,
                 operation_id="medicalPredict", responses=model_errors(),
                 summary="Calibrated diagnosis of one image (PNG, JPEG, DICOM or NIfTI)")
    async def predict(request: Request):
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            req = await _from_multipart(request)
        else:
            req = await _from_json(request)
        return await served.predict(req)

    @router.post("/feedback", response_model=FeedbackResult,
                 operation_id="medicalFeedback",
                 responses=model_errors(), summary="Confirmed diagnoses of earlier predictions")
    async def feedback(req: MedicalFeedbackRequest):
        """Labels after the fact, joined to the prediction log by case_id or request id (for
        monitoring's realised AUC and ECE); unknown ids are counted, never an error."""
        return await served.feedback(class_labels(req.feedback, list(served.predictor.labels)))

    return router
