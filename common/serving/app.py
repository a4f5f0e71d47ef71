"""`create_app`: one FastAPI app serving any set of registered verticals.

    app = create_app(["fraud", "recommender"])            # latest bundles under $VERTICALS_HOME
    app = create_app(predictors={"fraud": my_predictor})  # already-loaded predictors (tests, libs)

Routes besides the verticals' own: /livez, /readyz, /metrics, /v1/models.
"""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from common.errors import VerticalsError
from common.predictor import Predictor
from common.registry import get_vertical
from common.serving.middleware import ServingMiddleware, error_body
from common.serving.prom import render
from common.serving.served import ServedPredictor

__all__ = ["create_app", "DEFAULT_MAX_BODY"]
log = logging.getLogger(__name__)
DEFAULT_MAX_BODY = 16 * 1024 * 1024


def _error(
    status: int,
    request: Request,
    code: str,
    message: str,
    field: str | None,
    headers: dict[str, str] | None = None,
) -> Response:
    rid = request.scope.get("state", {}).get("request_id")
    return Response(
        error_body(code, message, field, rid),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(VerticalsError)
    async def _verticals_error(request: Request, exc: VerticalsError):
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        return _error(exc.status, request, exc.code, exc.message, exc.field, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ())]
        if loc and loc[0] in ("body", "query", "path", "header"):
            loc = loc[1:] or loc
        field = ".".join(loc) or None
        msg = first.get("msg", "invalid request")
        if first.get("type") == "json_invalid":  # loc holds a character offset, not a field
            field, msg = "body", f"{msg} at character {loc[0] if loc else '?'}"
        return _error(422, request, "invalid_input", f"{field}: {msg}" if field else msg, field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        return _error(
            exc.status_code,
            request,
            codes.get(exc.status_code, "http_error"),
            str(exc.detail),
            None,
            getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return _error(
            500,
            request,
            "internal_error",
            "internal error; see server logs with this request_id",
            None,
        )


def create_app(
    verticals: list[str] | None = None,
    *,
    predictors: dict[str, Predictor] | None = None,
    bundles: dict[str, str | Path] | None = None,
    root: str | Path | None = None,
    device: str | None = None,
    api_key: str | None = None,
    max_body_bytes: int | None = None,
    max_queue: int = 2048,
    timeout_s: float = 30.0,
    batching: dict[str, dict[str, Any]] | None = None,
    predictor_options: dict[str, dict[str, Any]] | None = None,
) -> FastAPI:
    """Build the app. Predictors not given ready-made are loaded at startup (`bundles[name]` or
    the latest bundle under `root`); /readyz is false until all are loaded and healthy."""
    predictors = dict(predictors or {})
    names = list(dict.fromkeys([*(verticals or []), *predictors]))
    if not names:
        raise ValueError("create_app needs at least one vertical name or predictor")
    specs = {n: get_vertical(n) for n in names}
    served: dict[str, ServedPredictor] = {}
    state: dict[str, Any] = {"load_errors": {}}
    api_key = api_key if api_key is not None else os.environ.get("VERTICALS_API_KEY") or None
    max_body = max_body_bytes or int(os.environ.get("VERTICALS_MAX_BODY_BYTES", DEFAULT_MAX_BODY))

    def build(name: str) -> Predictor:
        if name in predictors:
            return predictors[name]
        cls = specs[name].predictor_cls
        ref = (bundles or {}).get(name, "latest")
        return cls.load(ref, root=root, device=device, **(predictor_options or {}).get(name, {}))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for name in names:
            try:
                p = await asyncio.to_thread(build, name)
                s = ServedPredictor(
                    p, max_queue=max_queue, timeout_s=timeout_s, **(batching or {}).get(name, {})
                )
                await s.start()
                served[name] = s
            except VerticalsError as e:
                state["load_errors"][name] = e.message
                log.error("could not load %s: %s", name, e.message)
        yield
        await asyncio.gather(*(s.stop(drain=True) for s in served.values()))

    app = FastAPI(
        title="verticals",
        version="0.1.0",
        lifespan=lifespan,
        description="Domain ML verticals on one shared core. Every error has the shape "
        '{"error": {"code", "message", "field"}, "request_id"}.',
    )
    app.state.served = served
    _install_error_handlers(app)

    @app.get("/livez", tags=["ops"])
    async def livez():
        return {"status": "alive"}

    @app.get("/readyz", tags=["ops"])
    async def readyz(request: Request):
        status = {n: (n in served and served[n].healthy()) for n in names}
        if all(status.values()):
            return {"ready": True, "models": status}
        missing = [n for n, ok in status.items() if not ok]
        why = "; ".join(
            f"{n}: {state['load_errors'].get(n, 'not loaded or unhealthy')}" for n in missing
        )
        return _error(503, request, "not_ready", f"not ready: {why}", None, {"Retry-After": "5"})

    @app.get("/metrics", tags=["ops"])
    async def metrics():
        body, ctype = render()
        return Response(body, media_type=ctype)

    @app.get("/v1/models", tags=["ops"])
    async def models():
        return {
            "models": [dict(s.predictor.info(), queue_depth=s.queue_depth) for s in served.values()]
        }

    for name in names:
        app.include_router(specs[name].build_router(_LazyServed(served, name)))
    app.add_middleware(ServingMiddleware, api_key=api_key, max_body_bytes=max_body)
    return app


class _LazyServed:
    """Routers are mounted before startup loads the models; this resolves the ServedPredictor
    at request time and answers 503 while it is not loaded."""

    def __init__(self, served: dict[str, ServedPredictor], name: str):
        self._served, self.name = served, name

    def _get(self) -> ServedPredictor:
        s = self._served.get(self.name)
        if s is None:
            from common.errors import NotReady

            raise NotReady(f"model for {self.name} is not loaded")
        return s

    @property
    def predictor(self) -> Predictor:
        return self._get().predictor

    async def predict(self, request, timeout_s=None):
        return await self._get().predict(request, timeout_s)

    async def predict_many(self, requests, timeout_s=None):
        return await self._get().predict_many(requests, timeout_s)

    async def call(self, fn, *args, **kwargs):
        return await self._get().call(fn, *args, **kwargs)
