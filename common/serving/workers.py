"""Which worker processes of a multi-worker server have each vertical loaded.

`verticals serve --workers N` sets VERTICALS_WORKERS=N and VERTICALS_WORKERS_DIR (a fresh
directory). Each worker drops an empty file `<pid>.<vertical>` there once that vertical's
model is loaded and serving, and removes it when it stops. Any worker can then answer /readyz
for the whole server: a worker killed with SIGKILL leaves a file whose pid is gone, and its
replacement adds one only after it has loaded the model, so /readyz is false from the kill
until the replacement serves, and stays false if the replacement cannot load (e.g. the bundle
on disk was corrupted meanwhile) while the surviving workers keep answering.
Without these variables (one process, tests) there is nothing to check.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["mark_loaded", "unmark", "missing_workers", "DIR_ENV", "COUNT_ENV"]
DIR_ENV = "VERTICALS_WORKERS_DIR"
COUNT_ENV = "VERTICALS_WORKERS"


def _dir() -> Path | None:
    d = os.environ.get(DIR_ENV)
    return Path(d) if d and os.environ.get(COUNT_ENV) else None


def mark_loaded(vertical: str) -> None:
    """Record that this process serves `vertical`."""
    d = _dir()
    if d is not None:
        (d / f"{os.getpid()}.{vertical}").touch()


def unmark(vertical: str) -> None:
    d = _dir()
    if d is not None:
        (d / f"{os.getpid()}.{vertical}").unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if Path("/proc/self/stat").exists():  # a zombie (killed, not yet reaped) counts as dead
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def missing_workers(verticals: list[str]) -> dict[str, str]:
    """vertical -> reason, for each vertical that fewer live workers serve than were started."""
    d = _dir()
    if d is None:
        return {}
    expected = int(os.environ[COUNT_ENV])
    live: dict[str, set[int]] = {v: set() for v in verticals}
    for f in d.iterdir():
        pid, _, vertical = f.name.partition(".")
        if vertical in live and pid.isdigit():
            if _alive(int(pid)):
                live[vertical].add(int(pid))
            else:
                f.unlink(missing_ok=True)  # a killed worker's leftover
    return {
        v: f"{len(pids)} of {expected} workers have it loaded (a worker is restarting or "
        "could not load the model; see the server log)"
        for v, pids in live.items()
        if len(pids) < expected
    }
