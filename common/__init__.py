"""Shared core of the verticals suite: training, bundles, serving, batch scoring, metrics, CLI."""

__version__ = "0.1.0"
