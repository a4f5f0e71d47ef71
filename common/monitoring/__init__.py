"""Monitoring in production: reference profiles, the prediction log, delayed labels, drift,
estimated and realised performance (see docs/monitoring.md).

Names are imported on first use: a process that only writes or reads the log (a training job
adding a profile, a log reader) does not pay for the serving stack that `Monitor` needs."""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "PROFILE_FILE": "profile", "numeric_ref": "profile", "categorical_ref": "profile",
    "embedding_ref": "profile", "build_profile": "profile", "load_profile": "profile",
    "calibrate": "drift", "window_stats": "drift", "estimated": "estimate",
    "realised": "estimate", "PredictionLog": "predlog", "check_writable": "predlog",
    "FeedbackStore": "feedback", "FeedbackResult": "feedback", "Monitor": "monitor",
    "MonitorSettings": "monitor",
}
__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'common.monitoring' has no attribute {name!r}")
    return getattr(importlib.import_module(f"common.monitoring.{_WHERE[name]}"), name)
