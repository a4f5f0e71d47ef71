"""The servers under test, each run by bench/serving.py as its own process on 127.0.0.1.

uvicorn app factories (model from env BENCH_MODEL):
- `fastapi_app`: a plain FastAPI endpoint, one forward per request;
- `noop_app`: the same endpoint that only validates and decodes the body (the HTTP floor);
- `verticals_app`: our server, `create_app(predictors=...)` on a bench-local vertical.
LitServe runs from bench/_litserve.py.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI

from bench._models import (
    PATHS,
    PREDICTORS,
    REQUESTS,
    Prediction,
    build_model,
    decode,
    forward,
    to_batch,
)
from bench._models import set_threads as _set_threads

HEALTH = {"fastapi": "/livez", "noop": "/livez", "verticals": "/readyz", "litserve": "/health"}


def _model() -> str:
    return os.environ.get("BENCH_MODEL", "mlp")


def _plain(model: str, run_model: bool) -> FastAPI:
    req_model = REQUESTS[model]
    net = build_model(model) if run_model else None
    app = FastAPI()

    # `async def` with the forward inline: for these models it beat a sync `def` endpoint
    # (threadpool hop, several forwards fighting for 2 cores) in our runs; see bench/README.md.
    async def predict(req):
        x = decode(model, req)
        if net is None:
            return {"label": 0, "probability": 1.0}
        return forward(net, to_batch([x]))[0]

    async def livez():
        return {"status": "alive"}

    predict.__annotations__["req"] = req_model  # a real class: annotations here are strings

    app.add_api_route(PATHS[model], predict, methods=["POST"], response_model=Prediction)
    app.add_api_route("/livez", livez, methods=["GET"])
    return app


def fastapi_app() -> FastAPI:
    _set_threads()
    return _plain(_model(), run_model=True)


def noop_app() -> FastAPI:
    return _plain(_model(), run_model=False)


def verticals_app() -> FastAPI:
    from common import registry
    from common.serving import create_app

    # Serve only the bench vertical: importing the suite's other plugins (transformers, ...)
    # costs seconds of start-up and is not what is being measured.
    registry._PLUGINS_LOADED = True

    predictor = PREDICTORS[_model()].load("latest", root=Path(os.environ["BENCH_BUNDLE_ROOT"]))
    return create_app(predictors={predictor.vertical: predictor})
