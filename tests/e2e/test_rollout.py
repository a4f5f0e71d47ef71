"""Zero-downtime rollout on a real server with 2 workers: under steady load, three moves of the
`production` alias (one to a bundle that cannot load) give no non-2xx response, every response
names a version live at the time, the broken bundle is never served, and both workers follow.
And the shadow's own process: replaced when the candidate changes, gone after the server stops
(SIGTERM) and after the server is killed (SIGKILL)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from safetensors.torch import save_file

import tests.common.toy_vertical  # noqa: F401
from common.aliases import set_alias, set_rollout
from common.artifacts import MANIFEST, WEIGHTS, _sha256
from common.registry import get_vertical
from tests.e2e.test_server import ROOT, free_port, post

pytestmark = pytest.mark.slow
POLL_S = 0.5


def _unloadable_copy(root, version: str) -> str:
    """A bundle whose checksums verify but whose weights do not fit the model (a trainer bug):
    it passes `models alias` and fails only when a server loads it."""
    import torch

    bad = "29990101T000000000000Z"
    dst = root / "toy" / bad
    shutil.copytree(root / "toy" / version, dst)
    save_file({"0.weight": torch.zeros(3, 3)}, str(dst / WEIGHTS))
    manifest = json.loads((dst / MANIFEST).read_text())
    manifest["version"] = bad
    manifest["files"][WEIGHTS] = {"sha256": _sha256(dst / WEIGHTS),
                                  "bytes": (dst / WEIGHTS).stat().st_size}
    (dst / MANIFEST).write_text(json.dumps(manifest))
    return bad


def _worker_versions(base: str) -> dict[str, str]:
    """pid -> version each live worker reports serving (value 1 in the multiprocess gauge)."""
    text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("verticals_model_version_info{") and line.endswith(" 1.0"):
            pid = re.search(r'pid="(\d+)"', line).group(1)
            out[pid] = re.search(r'version="([^"]+)"', line).group(1)
    return out


def _wait_converged(base: str, version: str, limit_s: float = 30) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        try:
            seen = _worker_versions(base)
        except OSError:  # not listening yet
            time.sleep(0.2)
            continue
        if len(seen) == 2 and set(seen.values()) == {version}:
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError(f"workers did not converge on {version}: {_worker_versions(base)}")


def test_alias_moves_under_load_with_two_workers(tmp_path):
    toy = get_vertical("toy")
    v1, v2, v4 = (toy.train_default(tmp_path).version for _ in range(3))
    v3 = _unloadable_copy(tmp_path, v2)
    set_alias(tmp_path, "toy", v1, "production")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VERTICALS_ALIAS_POLL_S": str(POLL_S),
           "VERTICALS_EXTRA_PLUGINS": "tests.common.toy_vertical"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "common.cli", "serve", "--verticals", "toy", "--root",
         str(tmp_path), "--port", str(port), "--workers", "2"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    results: list[tuple[float, float, int, str]] = []  # sent, received, status, version
    stop = threading.Event()

    def load(i: int) -> None:
        while not stop.is_set():
            sent = time.monotonic()
            code, body = post(base, {"x": [i, 1.0, 2.0, 3.0]})
            results.append((sent, time.monotonic(), code, body.get("model_version", "")))

    try:
        _wait_converged(base, v1, limit_s=90)
        threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(1)
        moves = []  # (time the move was made, time both workers serve it, version)
        for target, expect in ((v2, v2), (v3, v2), (v4, v4)):
            t_move = time.monotonic()
            set_alias(tmp_path, "toy", target, "production", reason="test")
            if target == v3:
                time.sleep(4 * POLL_S)  # both workers have tried it and refused it
                assert set(_worker_versions(base).values()) == {v2}
                t_done = time.monotonic()
            else:
                t_done = t_move + _wait_converged(base, expect)
                # every worker polls once per interval; loading the toy bundle is quick
                assert t_done - t_move <= 2 * POLL_S + 1.5
            moves.append((t_move, t_done, expect))
            time.sleep(1)
        stop.set()
        for t in threads:
            t.join()
    finally:
        stop.set()
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert len(results) > 100
    assert {code for _, _, code, _ in results} == {200}, err[-2000:]
    assert v3 not in {v for *_, v in results}
    assert err.count(f"refused bundle {v3}") == 2  # once per worker, not at every poll
    # a response names the version live when it was sent or the one being moved to; a
    # request sent once both workers had converged names the new one
    live = [(float("-inf"), float("-inf"), v1), *moves]
    for sent, received, _, v in results:
        k = max(i for i, (t_move, _, _) in enumerate(live) if t_move <= received)
        allowed = {live[k][2], live[k - 1][2] if k else v1}
        if sent >= live[k][1]:
            allowed = {live[k][2]}
        assert v in allowed, (sent, received, v, allowed)


# ---- the shadow process ------------------------------------------------------------------------
def _shadow_children(parent: int) -> set[int]:
    """Live shadow processes (common.serving.shadow_proc) whose parent is `parent`."""
    out = set()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = open(f"/proc/{d}/cmdline", "rb").read()
            stat = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if b"common.serving.shadow_proc" in cmd and int(stat[1]) == parent and stat[0] != "Z":
            out.add(int(d))
    return out


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # exited, waiting for whoever adopted it to reap it


def _wait(pred, limit_s: float, what: str):
    t_end = time.monotonic() + limit_s
    while time.monotonic() < t_end:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"not within {limit_s}s: {what}")


def _compared(base: str, candidate: str) -> float:
    """Posts one request; returns how many the shadow of `candidate` has compared so far."""
    assert post(base, {"x": [1.0, 1.0, 2.0, 3.0]})[0] == 200
    text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
    m = re.search(rf'verticals_shadow_compared_total{{candidate="{candidate}",model="toy"}} '
                  r"(\S+)", text)
    return float(m.group(1)) if m else 0.0


def _serve_with_shadow(root):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VERTICALS_ALIAS_POLL_S": "0.3",
           "VERTICALS_EXTRA_PLUGINS": "tests.common.toy_vertical"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "common.cli", "serve", "--verticals", "toy", "--root", str(root),
         "--port", str(port)], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    child = _wait(lambda: _shadow_children(proc.pid), 120, "a shadow process")
    assert len(child) == 1
    return proc, f"http://127.0.0.1:{port}", child.pop()


def test_shadow_process_follows_the_candidate_and_never_outlives_the_server(tmp_path):
    toy = get_vertical("toy")
    v1, v2, v3 = (toy.train_default(tmp_path).version for _ in range(3))
    set_alias(tmp_path, "toy", v1, "production")
    set_alias(tmp_path, "toy", v2, "candidate")
    set_rollout(tmp_path, "toy", shadow=1.0)
    proc, base, first = _serve_with_shadow(tmp_path)
    try:
        _wait(lambda: _compared(base, v2), 60, "the shadow comparing answers")
        set_alias(tmp_path, "toy", v3, "candidate")  # a new candidate: a new process
        second = _wait(lambda: _shadow_children(proc.pid) - {first}, 120, "a second process")
        assert not _alive(first) and len(second) == 1
        _wait(lambda: _compared(base, v3), 60, "the new shadow comparing answers")
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not _alive(second.pop())  # stopped with the server, not orphaned

    killed, _, child = _serve_with_shadow(tmp_path)
    killed.kill()  # no shutdown hook runs: the child sees its socket close, or its parent go
    killed.wait()
    _wait(lambda: not _alive(child), 10, f"shadow process {child} exiting after SIGKILL")
