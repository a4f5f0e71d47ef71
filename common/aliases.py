"""Aliases in the bundle store: named pointers (`production`, `candidate`, ...) to bundle versions.

Layout: `<root>/<vertical>/aliases.json` holds both the current aliases and their whole history,
so an alias move is one atomic write (temp file, fsync, rename): a reader sees the old state or
the new one, never half of it, and never a move without its history record. Moves of one
vertical are serialised with an advisory lock, so two operators cannot lose each other's move.

    set_alias(root, "fraud", "20261202T101500123456Z", "candidate", reason="retrained")
    promote(root, "fraud")             # candidate -> production
    rollback(root, "fraud")            # production -> the version it replaced
    resolve_alias(root, "fraud", "production")  # -> bundle dir

Bundles stay immutable; only the pointers move (the vocabulary MLflow adopted for its registry).
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import re
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.artifacts import default_root, load_bundle
from common.errors import BundleError, InvalidInput, NotFound
from common.tracking import mirror_aliases

__all__ = [
    "ALIASES_FILE",
    "get_aliases",
    "alias_history",
    "resolve_alias",
    "set_alias",
    "promote",
    "rollback",
    "serving_ref",
    "get_rollout",
    "set_rollout",
]

ALIASES_FILE = "aliases.json"
_NAME_OK = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
# `latest` is computed from the store, never stored: an alias of that name would shadow it.
_RESERVED = frozenset({"latest"})


def _root(root: str | Path | None) -> Path:
    return Path(root) if root is not None else default_root()


def _file(root: str | Path | None, vertical: str) -> Path:
    return _root(root) / vertical / ALIASES_FILE


def _read(root: str | Path | None, vertical: str) -> dict[str, Any]:
    path = _file(root, vertical)
    if not path.is_file():
        return {"aliases": {}, "history": []}
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{path} is not valid JSON: {e}", field="alias") from None
    state.setdefault("aliases", {})
    state.setdefault("history", [])
    return state


def _write(root: str | Path | None, vertical: str, state: dict[str, Any]) -> None:
    path = _file(root, vertical)
    fd, tmp = tempfile.mkstemp(prefix=".aliases-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(state, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


@contextlib.contextmanager
def _locked(root: str | Path | None, vertical: str) -> Iterator[None]:
    d = _root(root) / vertical
    if not d.is_dir():
        raise NotFound(f"no bundles for vertical {vertical!r} under {_root(root)}", "vertical")
    with open(d / ".aliases.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def get_aliases(root: str | Path | None, vertical: str) -> dict[str, str]:
    """Current aliases of a vertical: {name: version}."""
    return dict(_read(root, vertical)["aliases"])


def alias_history(root: str | Path | None, vertical: str) -> list[dict[str, Any]]:
    """Every alias move of a vertical, oldest first."""
    return list(_read(root, vertical)["history"])


def _bundle_dir(root: str | Path | None, vertical: str, version: str) -> Path:
    if not version or "/" in version or version.startswith("."):
        raise InvalidInput("version", f"{version!r} is not a bundle version")
    return _root(root) / vertical / version


def _verified(root: str | Path | None, vertical: str, version: str, field: str):
    path = _bundle_dir(root, vertical, version)
    if not path.is_dir():
        raise NotFound(f"{vertical} has no bundle version {version!r} under {_root(root)}", field)
    return load_bundle(path, vertical=vertical)  # checksums + the manifest's vertical


def resolve_alias(root: str | Path | None, vertical: str, name: str) -> Path:
    """The bundle directory an alias points at; NotFound when the alias is not set."""
    version = get_aliases(root, vertical).get(name)
    if version is None:
        raise NotFound(f"{vertical} has no alias {name!r}", "alias")
    return _bundle_dir(root, vertical, version)


def serving_ref(root: str | Path | None, vertical: str) -> str | Path:
    """What `serve` serves: the `production` alias when set, else `latest`."""
    if not (_root(root) / vertical).is_dir():
        return "latest"
    version = get_aliases(root, vertical).get("production")
    return _bundle_dir(root, vertical, version) if version else "latest"


def _move(
    root: str | Path | None,
    vertical: str,
    name: str,
    version: str | None,
    reason: str,
    action: str,
    user: str | None,
) -> dict[str, Any]:
    state = _read(root, vertical)
    old = state["aliases"].get(name)
    metrics_of = {}
    for v in (old, version):
        if v and v not in metrics_of:
            try:
                metrics_of[v] = _verified(root, vertical, v, "version").manifest.get("metrics", {})
            except (BundleError, NotFound):
                metrics_of[v] = None  # the old target may since have been deleted or corrupted
    record = {
        "time": datetime.now(UTC).isoformat(),
        "alias": name,
        "from": old,
        "to": version,
        "action": action,
        "reason": reason,
        "user": user or _user(),
        "metrics_from": metrics_of.get(old) if old else None,
        "metrics_to": metrics_of.get(version) if version else None,
    }
    if version is None:
        state["aliases"].pop(name, None)
    else:
        state["aliases"][name] = version
    state["history"].append(record)
    _write(root, vertical, state)
    # under the lock, so MLflow's aliases move in the store's order (no-op without MLflow)
    mirror_aliases(root, vertical, state)
    return record


def _user() -> str:
    try:
        return os.environ.get("VERTICALS_USER") or getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        return "unknown"


def _check_name(name: str) -> None:
    if name in _RESERVED or not _NAME_OK.match(name):
        raise InvalidInput(
            "alias", f"{name!r} is not a valid alias (lowercase letters, digits, - and _; "
            "not 'latest')"
        )


def set_alias(
    root: str | Path | None,
    vertical: str,
    version: str,
    name: str,
    reason: str = "",
    user: str | None = None,
) -> dict[str, Any]:
    """Point alias `name` at `version` (verified first). Returns the history record."""
    _check_name(name)
    with _locked(root, vertical):
        _verified(root, vertical, version, "version")
        return _move(root, vertical, name, version, reason, "alias", user)


def promote(
    root: str | Path | None,
    vertical: str,
    reason: str = "",
    user: str | None = None,
    expect: dict[str, str] | None = None,
) -> dict[str, Any]:
    """candidate -> production; the candidate alias is cleared. Returns the production record.
    `expect` ({alias: version}, e.g. what a gate scored) must still hold under the lock, or
    nothing moves."""
    with _locked(root, vertical):
        current = get_aliases(root, vertical)
        cand = current.get("candidate")
        if cand is None:
            raise NotFound(f"{vertical} has no 'candidate' alias to promote", "alias")
        for name, version in (expect or {}).items():
            if current.get(name) != version:
                raise InvalidInput("alias", f"{vertical}: {name} moved to {current.get(name)} "
                                            f"(expected {version}); not promoted, run it again")
        _verified(root, vertical, cand, "candidate")
        rec = _move(root, vertical, "production", cand, reason, "promote", user)
        _move(root, vertical, "candidate", None, f"promoted to production: {reason}".strip(),
              "promote", user)
        state = _read(root, vertical)
        if state.get("rollout"):  # shadow/canary of a candidate that is now production
            state["history"].append({
                "time": datetime.now(UTC).isoformat(), "alias": "rollout",
                "from": json.dumps(state["rollout"], sort_keys=True), "to": "{}",
                "action": "rollout", "reason": "candidate promoted", "user": user or _user(),
                "metrics_from": None, "metrics_to": None,
            })
            state["rollout"] = {}
            _write(root, vertical, state)
        return rec


def get_rollout(root: str | Path | None, vertical: str) -> dict[str, Any]:
    """Shadow / canary settings of a vertical: {"shadow": f, "canary": w, "key": k} ({} = off)."""
    return dict(_read(root, vertical).get("rollout") or {})


def set_rollout(
    root: str | Path | None,
    vertical: str,
    shadow: float = 0.0,
    canary: float = 0.0,
    key: str | None = None,
    reason: str = "",
    user: str | None = None,
) -> dict[str, Any]:
    """Set the share of requests shadowed by, and routed to, the `candidate` (0 = off). Kept in
    the store beside the aliases, so every worker and replica reads the same settings."""
    for field, v in (("shadow", shadow), ("canary", canary)):
        if not 0.0 <= v <= 1.0:
            raise InvalidInput(field, f"must be a fraction between 0 and 1, got {v}")
    if key is not None and not re.match(r"^(header:[A-Za-z0-9-]{1,64}|[a-z_][a-z0-9_]{0,63})$",
                                        key):
        raise InvalidInput("key", f"{key!r} is not a request field name or header:NAME")
    with _locked(root, vertical):
        state = _read(root, vertical)
        if (shadow or canary) and "candidate" not in state["aliases"]:
            raise NotFound(f"{vertical} has no 'candidate' alias to shadow or canary", "alias")
        new = {"shadow": shadow, "canary": canary, "key": key} if (shadow or canary) else {}
        record = {
            "time": datetime.now(UTC).isoformat(), "alias": "rollout",
            "from": json.dumps(state.get("rollout") or {}, sort_keys=True),
            "to": json.dumps(new, sort_keys=True), "action": "rollout", "reason": reason,
            "user": user or _user(), "metrics_from": None, "metrics_to": None,
        }
        state["rollout"] = new
        state["history"].append(record)
        _write(root, vertical, state)
        return record


def _rollback_target(history: list[dict[str, Any]]) -> str | None:
    """Undo stack over production moves: a move pushes what it replaced, a rollback pops."""
    stack: list[str | None] = []
    for rec in history:
        if rec.get("alias") != "production":
            continue
        if rec.get("action") == "rollback":
            if stack:
                stack.pop()
        else:
            stack.append(rec.get("from"))
    return stack[-1] if stack else None


def rollback(
    root: str | Path | None, vertical: str, reason: str = "", user: str | None = None
) -> dict[str, Any]:
    """production -> the version it replaced (repeatable: each rollback steps one move back)."""
    with _locked(root, vertical):
        state = _read(root, vertical)
        target = _rollback_target(state["history"])
        if target is None:
            raise NotFound(
                f"{vertical}: no earlier production version to roll back to", "alias"
            )
        _verified(root, vertical, target, "version")
        return _move(root, vertical, "production", target, reason, "rollback", user)
