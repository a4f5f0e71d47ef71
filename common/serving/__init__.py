"""Serving core: one FastAPI app for any set of verticals, with dynamic batching."""

from common.serving.app import create_app
from common.serving.served import ServedPredictor

__all__ = ["create_app", "ServedPredictor"]
