"""The server under test in bench/rollout.py: our server started from a bundle store, so that it
follows the store's aliases and rollout settings (`create_app([name], root=...)`);
bench/_servers.py's `verticals_app` hands over a ready-made predictor, which is pinned.

uvicorn app factory `rollout_app`, configured by env: BENCH_VERTICAL (`bench-mlp` or `fraud`),
BENCH_BUNDLE_ROOT (the store), VERTICALS_ALIAS_POLL_S (read by common.serving.follow).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from fastapi import FastAPI

from bench._models import set_threads

# the module that registers each vertical (so the suite's other plugins are not imported)
MODULES = {"bench-mlp": "bench._models", "fraud": "fraud_detection.vertical"}


def rollout_app() -> FastAPI:
    from common import registry
    from common.serving import create_app

    # Serve only the vertical under test: importing the suite's other plugins (transformers,
    # ...) costs seconds of start-up and is not what is being measured.
    registry._PLUGINS_LOADED = True
    name = os.environ["BENCH_VERTICAL"]
    importlib.import_module(MODULES[name])
    set_threads()
    return create_app([name], root=Path(os.environ["BENCH_BUNDLE_ROOT"]))
