"""App factory for `uvicorn --factory` with several workers: each worker process rebuilds the
app from the JSON config the CLI put in VERTICALS_SERVE_CONFIG."""

from __future__ import annotations

import json
import os

from fastapi import FastAPI

from common.serving.app import create_app

__all__ = ["app_from_env"]


def app_from_env() -> FastAPI:
    cfg = json.loads(os.environ.get("VERTICALS_SERVE_CONFIG", "{}"))
    return create_app(
        cfg.get("verticals"),
        bundles=cfg.get("bundles"),
        root=cfg.get("root"),
        device=cfg.get("device"),
        predictor_options=cfg.get("predictor_options"),
    )
