"""Vertical registry: `@register_vertical("fraud")` on a `Vertical` subclass, discovered through the
`verticals.plugins` entry-point group so the core never imports a vertical by name."""

from __future__ import annotations

import importlib
import logging
import os
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from common.errors import NotFound

if TYPE_CHECKING:
    from common.vertical import Vertical

__all__ = ["register_vertical", "get_vertical", "list_verticals", "load_plugins"]

log = logging.getLogger(__name__)
_REGISTRY: dict[str, type[Vertical]] = {}
_PLUGINS_LOADED = False
ENTRY_POINT_GROUP = "verticals.plugins"


def register_vertical(name: str):
    """Class decorator: registers a `Vertical` subclass under `name`."""

    def deco(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"vertical {name!r} is registered twice ({_REGISTRY[name]} and {cls})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def load_plugins() -> None:
    """Import every module named in the `verticals.plugins` entry-point group (once)."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as e:  # one broken plugin must not take the others down
            log.warning("vertical plugin %s (%s) could not be loaded: %s", ep.name, ep.value, e)
    # Extra plugin modules by name, e.g. for worker processes (Ray actors) of a test vertical.
    for mod in filter(None, os.environ.get("VERTICALS_EXTRA_PLUGINS", "").split(",")):
        importlib.import_module(mod.strip())
    _PLUGINS_LOADED = True


def list_verticals() -> list[str]:
    load_plugins()
    return sorted(_REGISTRY)


def get_vertical(name: str) -> Vertical:
    """A fresh instance of the vertical registered as `name`."""
    load_plugins()
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise NotFound(f"unknown vertical {name!r}; registered: {known}", field="vertical")
    return _REGISTRY[name]()
