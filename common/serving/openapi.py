"""The OpenAPI document says exactly what the server does: teams generate clients from it, and
the Schemathesis fuzz (tests/e2e/test_fuzz_api.py) fails on any answer it does not describe.

- `ErrorResponse` is the one error shape; `error_responses(...)` documents status codes with it,
  `model_errors(...)` the ones every model route can answer (422 invalid input, 503 not loaded,
  draining or queue full, 504 deadline passed).
- `install_openapi` adds what depends on the app's configuration rather than on a route: 413 and
  422 on every operation with a body (the middleware's size, depth and part limits), 401/403
  and the security schemes when API keys are configured (not on the probes, which stay open),
  and what only a loaded bundle knows (`Vertical.openapi_schema_updates`, e.g. the translation
  pair). The document is cached once every model is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field

from common.serving.api_keys import KeyRing
from common.serving.middleware import OPEN_PATHS

if TYPE_CHECKING:
    from common.serving.served import ServedPredictor
    from common.vertical import Vertical

__all__ = ["ErrorDetail", "ErrorResponse", "error_responses", "model_errors", "install_openapi",
           "ReadyResponse", "LiveResponse", "ModelsResponse", "MonitoringResponse", "TEXT_PLAIN"]

_REF = "#/components/schemas/{model}"


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable: invalid_input, not_found, unauthorized, "
                                  "forbidden, payload_too_large, not_ready, overloaded, "
                                  "deadline_exceeded, ...")
    message: str = Field(description="what is wrong and, for bad input, why")
    field: str | None = Field(description="the offending field as a dotted path, or null")


class ErrorResponse(BaseModel):
    """Every error, from every route and the middleware."""

    error: ErrorDetail
    request_id: str | None = Field(description="also in the X-Request-ID header; quote it")


class LiveResponse(BaseModel):
    status: str = Field(description="always 'alive': the process answers")


class ReadyResponse(BaseModel):
    ready: bool
    models: dict[str, bool] = Field(description="vertical name → loaded and healthy")


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="allow")  # a predictor may report more (e.g. its alias)
    vertical: str
    name: str
    version: str
    sha256: str | None
    metrics: dict[str, Any] = Field(description="the bundle's evaluation metrics")
    created_at: str | None
    queue_depth: int = Field(description="requests waiting for this model now")


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


class VersionMonitoring(BaseModel):
    requests: int = Field(description="answers of this version logged by this process")
    windows: int = Field(description="complete windows of this version in this process")
    monitored: bool | None = Field(description="has a reference profile (null: not looked yet)")
    reason: str | None = Field(description="why this version is not monitored, or null")
    last_window: dict[str, Any] | None = Field(
        description='{"end", "n", "drift": {feature: {"statistic", "threshold", "method", '
                    '"drift"}}, "drift_detected", "estimated": {metric: value}}')
    realised: dict[str, float] = Field(description="metrics on delayed labels, and n_labels")
    reference: dict[str, float] = Field(description="validation metrics from the profile")


class MonitoringLogInfo(BaseModel):
    dir: str = Field(description="this vertical's prediction log directory")
    rows: int = Field(description="rows this process has written")


class MonitoringFeedbackInfo(BaseModel):
    accepted: int
    unknown: int


class MonitoringResponse(BaseModel):
    vertical: str
    process: int = Field(description="pid of the worker that answered: windows are per process")
    enabled: bool = Field(description="the served version is logged and monitored")
    reason: str | None = Field(description="why monitoring is off, or null")
    window_size: int
    ert: float = Field(description="expected windows between false alarms (all features)")
    versions: dict[str, VersionMonitoring]
    log: MonitoringLogInfo
    feedback: MonitoringFeedbackInfo


_DESCRIPTIONS = {
    401: "No API key, or a malformed one (send X-API-Key or Authorization: Bearer)",
    403: "The API key is not accepted",
    404: "Not found (e.g. an id the model does not know, or a vertical not served here)",
    413: "Body over the size limit (VERTICALS_MAX_BODY_BYTES) or with too many multipart parts",
    422: "Invalid input: `error.field` names the field and `error.message` the reason",
    503: "Not ready: model not loaded, server draining, or queue full (retry after Retry-After)",
    504: "The deadline (X-Request-Timeout-Ms or the server's) passed before the model answered",
}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying",
                                "schema": {"type": "string"}}}
TEXT_PLAIN = "text/plain"


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for these status codes, each with the `ErrorResponse` body."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        out[code] = {"model": ErrorResponse, "description": _DESCRIPTIONS[code]}
        if code == 503:
            out[code]["headers"] = _RETRY_AFTER
    return out


def model_errors(*extra: int) -> dict[int | str, dict[str, Any]]:
    """What a route that calls a model can answer besides 200 (plus `extra`, e.g. 404)."""
    return error_responses(422, 503, 504, *extra)


def install_openapi(app: FastAPI, api_key: str | None, verticals: Mapping[str, Vertical],
                    served: Mapping[str, ServedPredictor]) -> None:
    """Make `app.openapi()` finish the generated document (see the module docstring)."""
    auth = KeyRing.from_env(api_key).enabled

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes,
                             description=app.description)
        _finish(schema, auth)
        for name, vertical in verticals.items():
            if name in served:
                _update_properties(schema, vertical.openapi_schema_updates(served[name].predictor))
        if all(name in served for name in verticals):  # before that, loaded models may change it
            app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _update_properties(schema: dict[str, Any], updates: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    for component, properties in updates.items():
        for prop, keywords in properties.items():
            components[component]["properties"][prop].update(keywords)


def _finish(schema: dict[str, Any], auth: bool) -> None:
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    error_schema = ErrorResponse.model_json_schema(ref_template=_REF)
    schemas.update(error_schema.pop("$defs", {}))
    schemas["ErrorResponse"] = error_schema
    error_ref = {"$ref": _REF.format(model="ErrorResponse")}

    def document(op: dict[str, Any], code: int) -> None:
        op["responses"].setdefault(str(code), {
            "description": _DESCRIPTIONS[code],
            "content": {"application/json": {"schema": error_ref}},
        })

    for path, item in schema.get("paths", {}).items():
        for op in item.values():
            if "requestBody" in op:
                document(op, 413)
                document(op, 422)
            if auth and path not in OPEN_PATHS:
                op["security"] = [{"ApiKeyHeader": []}, {"BearerAuth": []}]
                document(op, 401)
                document(op, 403)
            for resp in op["responses"].values():  # FastAPI's default 422 is not our shape
                media = resp.get("content", {}).get("application/json", {})
                if media.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                    media["schema"] = error_ref
                    resp["description"] = _DESCRIPTIONS[422]
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    if auth:
        components["securitySchemes"] = {
            "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "BearerAuth": {"type": "http", "scheme": "bearer"},
        }
