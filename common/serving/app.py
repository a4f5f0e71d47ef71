"""`create_app`: one FastAPI app serving any set of registered verticals.

    app = create_app(["fraud", "recommender"])            # latest bundles under $VERTICALS_HOME
    app = create_app(predictors={"fraud": my_predictor})  # already-loaded predictors (tests, libs)

Routes besides the verticals' own: /livez, /readyz, /metrics, /v1/models,
/v1/monitoring/{vertical} (common/monitoring: prediction log, drift, performance).
"""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from common.aliases import serving_ref
from common.artifacts import default_root
from common.errors import NotFound, VerticalsError
from common.predictor import Predictor
from common.registry import get_vertical
from common.serving.follow import DEFAULT_POLL_S, AliasFollower
from common.serving.middleware import ServingMiddleware, error_body
from common.serving.openapi import (
    TEXT_PLAIN,
    LiveResponse,
    ModelsResponse,
    MonitoringResponse,
    ReadyResponse,
    error_responses,
    install_openapi,
)
from common.serving.prom import render
from common.serving.served import ServedPredictor

if TYPE_CHECKING:
    from common.monitoring.monitor import Monitor

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
        if exc.status_code == 400:  # an unparsable body (FastAPI, multipart): bad input, as
            # for malformed JSON, so one status (422) and shape for every kind of bad body
            return _error(422, request, "invalid_input", f"body: {exc.detail}", "body")
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
    alias_poll_s: float | None = None,
    log_dir: str | Path | None = None,
) -> FastAPI:
    """Build the app. Predictors not given ready-made are loaded at startup (`bundles[name]`,
    else the `production` alias under `root`, else its latest bundle); /readyz is false until
    all are loaded and healthy. Verticals not pinned by `predictors`/`bundles` then follow their
    `production` alias every `alias_poll_s` seconds (default $VERTICALS_ALIAS_POLL_S or 2; 0
    turns following off). Answers are logged and monitored under `log_dir` (default
    $VERTICALS_LOG_DIR, else `<bundle root>/_monitoring`); a directory that cannot be written
    raises VerticalsError here, before the server starts."""
    predictors = dict(predictors or {})
    names = list(dict.fromkeys([*(verticals or []), *predictors]))
    if not names:
        raise ValueError("create_app needs at least one vertical name or predictor")
    specs = {n: get_vertical(n) for n in names}
    served: dict[str, ServedPredictor] = {}
    state: dict[str, Any] = {"load_errors": {}}
    api_key = api_key if api_key is not None else os.environ.get("VERTICALS_API_KEY") or None
    max_body = max_body_bytes or int(os.environ.get("VERTICALS_MAX_BODY_BYTES", DEFAULT_MAX_BODY))
    # imported here: common.monitoring uses common.serving.prom, which imports this package
    from common.monitoring.monitor import Monitor, MonitorSettings

    settings = MonitorSettings.from_env(_bundle_root(root, predictors, bundles), log_dir)
    monitors = {n: Monitor(n, specs[n].monitor_task, settings) for n in names}

    def build(name: str) -> Predictor:
        if name in predictors:
            return predictors[name]
        return build_from(name, (bundles or {}).get(name) or serving_ref(root, name))

    def build_from(name: str, ref: str | Path) -> Predictor:
        cls = specs[name].predictor_cls
        return cls.load(ref, root=root, device=device, **(predictor_options or {}).get(name, {}))

    follower = AliasFollower(
        served, build_from, root, pinned={*predictors, *(bundles or {})},
        poll_s=DEFAULT_POLL_S if alias_poll_s is None else alias_poll_s,
        examples={n: [e.payload for e in specs[n].example_requests()] for n in names},
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for name in names:
            try:
                p = await asyncio.to_thread(build, name)
                s = ServedPredictor(
                    p, max_queue=max_queue, timeout_s=timeout_s, **(batching or {}).get(name, {})
                )
                s.monitor = monitors[name] if settings.enabled else None
                await s.start()
                served[name] = s
            except VerticalsError as e:
                state["load_errors"][name] = e.message
                log.error("could not load %s: %s", name, e.message)
        for m in monitors.values():
            m.start()
        follower.start()
        yield
        await follower.stop()
        await asyncio.gather(*(s.stop(drain=True) for s in served.values()))
        for m in monitors.values():  # after the drain: the last answers reach the log
            await asyncio.to_thread(m.close)

    app = FastAPI(
        title="verticals",
        version="0.1.0",
        lifespan=lifespan,
        description="Domain ML verticals on one shared core. Every error has the shape "
        '{"error": {"code", "message", "field"}, "request_id"}.',
    )
    app.state.served = served
    app.state.follower = follower
    app.state.monitors = monitors
    _install_error_handlers(app)

    @app.get("/livez", tags=["ops"], operation_id="livez", response_model=LiveResponse)
    async def livez():
        return {"status": "alive"}

    @app.get("/readyz", tags=["ops"], operation_id="readyz", response_model=ReadyResponse,
             responses=error_responses(503))
    async def readyz(request: Request):
        from common.serving.workers import missing_workers

        reasons = {
            n: (await served[n].readiness() if n in served
                else state["load_errors"].get(n, "not loaded"))
            for n in names
        }
        for n, why in missing_workers(names).items():  # other worker processes of this server
            reasons[n] = reasons[n] or why
        if not any(reasons.values()):
            return {"ready": True, "models": {n: True for n in names}}
        why = "; ".join(f"{n}: {r}" for n, r in reasons.items() if r)
        return _error(503, request, "not_ready", f"not ready: {why}", None, {"Retry-After": "5"})

    @app.get("/metrics", tags=["ops"], operation_id="metrics", response_class=PlainTextResponse,
             responses={200: {"description": "Prometheus text exposition format",
                              "content": {TEXT_PLAIN: {"schema": {"type": "string"}}}}})
    async def metrics():
        body, ctype = render()
        return Response(body, media_type=ctype)

    @app.get("/v1/models", tags=["ops"], operation_id="listModels",
             response_model=ModelsResponse)
    async def models():
        return {
            "models": [dict(s.predictor.info(), queue_depth=s.queue_depth) for s in served.values()]
        }

    @app.get("/v1/monitoring/{vertical}", tags=["ops"], operation_id="monitoring",
             response_model=MonitoringResponse, responses=error_responses(404))
    async def monitoring(vertical: str):
        m = monitors.get(vertical)
        if m is None:
            raise NotFound(f"no vertical {vertical!r} is served here", "vertical")
        s = served.get(vertical)
        return m.snapshot(s.predictor if s is not None else None)

    post_routes: dict[str, str] = {}  # exact POST path -> vertical, for early load shedding
    for name in names:
        router = specs[name].build_router(
            _LazyServed(served, name, follower.rollouts, monitors[name]))
        for r in router.routes:
            if "POST" in (getattr(r, "methods", None) or ()) and "{" not in r.path:
                post_routes[r.path] = name
        app.include_router(router)

    def shed(path: str, timeout_s: float | None) -> str | None:
        s = served.get(post_routes.get(path, ""))
        return s.shed_reason(timeout_s) if s is not None else None

    install_openapi(app, api_key, specs, served)
    app.add_middleware(ServingMiddleware, api_key=api_key, max_body_bytes=max_body, shed=shed)
    return app


def _bundle_root(root: str | Path | None, predictors: dict[str, Predictor],
                 bundles: dict[str, str | Path] | None) -> Path:
    """Where the served bundles live: `root`, else the store of a ready-made predictor or an
    explicit bundle path (its grandparent), else the default store."""
    if root is not None:
        return Path(root)
    for p in predictors.values():
        return p.bundle.path.resolve().parents[1]
    for ref in (bundles or {}).values():
        if Path(ref).is_dir():
            return Path(ref).resolve().parents[1]
    return default_root()


class _LazyServed:
    """Routers are mounted before startup loads the models; this resolves the ServedPredictor
    at request time and answers 503 while it is not loaded. With a canary on
    (`common.serving.rollout`), each request goes to the model its routing key picks."""

    def __init__(self, served: dict[str, ServedPredictor], name: str, rollouts: dict,
                 monitor: Monitor | None = None):
        self._served, self.name, self._rollouts = served, name, rollouts
        self._monitor = monitor

    def _get(self) -> ServedPredictor:
        s = self._served.get(self.name)
        if s is None:
            from common.errors import NotReady

            raise NotReady(f"model for {self.name} is not loaded")
        return s

    @property
    def predictor(self) -> Predictor:
        return self._get().predictor

    def _route(self, request) -> ServedPredictor:
        s = self._get()
        r = self._rollouts.get(self.name)
        return r.candidate if r is not None and r.to_candidate(request) else s

    async def predict(self, request, timeout_s=None):
        return await self._route(request).predict(request, timeout_s)

    async def predict_many(self, requests, timeout_s=None):
        if self._rollouts.get(self.name) is None:
            return await self._get().predict_many(requests, timeout_s)
        # submitted in order, so one model thread answers them in order
        return list(await asyncio.gather(
            *(self._route(r).predict(r, timeout_s, k) for k, r in enumerate(requests))))

    async def call(self, fn, *args, **kwargs):
        return await self._get().call(fn, *args, **kwargs)

    async def feedback(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Store delayed labels `[{"id", "label"}]` joined later to the prediction log:
        {"accepted", "unknown", "unknown_ids"} (unknown ids are never an error)."""
        if self._monitor is None:
            from common.errors import NotReady

            raise NotReady(f"{self.name} has no prediction log")
        return await asyncio.to_thread(self._monitor.record_feedback, items)
