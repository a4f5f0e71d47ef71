"""Faults injected into a real multi-worker server (`verticals serve --workers 2`, uvicorn, real
HTTP on loopback): a worker killed with SIGKILL under load, and the served bundle corrupted on
disk while serving."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import tests.common.toy_vertical  # noqa: F401
from common.registry import get_vertical
from tests.e2e.test_server import ROOT, free_port, post

pytestmark = pytest.mark.slow  # each starts a 2-worker server and waits for a replacement


class Serve:
    """`verticals serve --verticals toy --workers 2`; the server's log goes to a file."""

    def __init__(self, root: Path, log: Path, workers: int = 2):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(ROOT),
               "VERTICALS_EXTRA_PLUGINS": "tests.common.toy_vertical"}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "common.cli", "serve", "--verticals", "toy", "--root",
                 str(root), "--port", str(self.port), "--workers", str(workers)],
                env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        self.wait_ready()

    def readyz(self) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(self.base + "/readyz", timeout=5) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        t_end = time.monotonic() + timeout_s
        while time.monotonic() < t_end:
            try:
                if self.readyz()[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"not ready after {timeout_s}s:\n{self.log.read_text()[-3000:]}")

    def workers(self) -> list[int]:
        """pids of the uvicorn worker processes (children of the supervisor)."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return [int(c) for c in children.split()
                if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture()
def root(tmp_path):
    r = tmp_path / "bundles"
    get_vertical("toy").train_default(r)
    return r


def attempt(base: str, i: int) -> str:
    """One request → "200", another status, or the connection error's name."""
    try:
        return str(post(base, {"x": [i % 7, 1.0, 2.0, 3.0]}, timeout=30)[0])
    except (OSError, http.client.HTTPException, ValueError) as e:  # a dropped connection
        reason = getattr(e, "reason", e)
        return type(reason).__name__


def test_sigkilled_worker_is_replaced_and_only_its_in_flight_requests_fail(root, tmp_path):
    srv = Serve(root, tmp_path / "server.log")
    try:
        old = srv.workers()
        assert len(old) == 2
        clients, stop = 6, threading.Event()
        outcomes: list[str] = []
        ready_seen: list[tuple[int, str]] = []

        def load(k: int) -> None:
            i = k
            while not stop.is_set():
                outcomes.append(attempt(srv.base, i))
                i += clients

        threads = [threading.Thread(target=load, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        before = len(outcomes)
        os.kill(old[0], signal.SIGKILL)  # at most one request per client thread in flight
        t_end = time.monotonic() + 150  # a fresh worker imports torch: slow on a busy box
        while time.monotonic() < t_end:
            try:
                status, body = srv.readyz()
            except (OSError, http.client.HTTPException) as e:  # in flight on the victim
                status, body = 0, type(e).__name__
            ready_seen.append((status, json.dumps(body)))
            if status == 200 and len(ready_seen) > 1 and old[0] not in srv.workers():
                break
            time.sleep(0.05)
        time.sleep(1.0)  # traffic keeps flowing to both workers
        stop.set()
        for t in threads:
            t.join(60)

        new = srv.workers()
        assert len(new) == 2 and old[0] not in new and old[1] in new
        # /readyz said "not ready" while the replacement loaded, then ready again
        assert any(s == 503 and "1 of 2 workers" in b for s, b in ready_seen), ready_seen[:3]
        assert ready_seen[-1][0] == 200
        failed = [o for o in outcomes if o != "200"]
        assert before > 0 and len(outcomes) > before
        # only the killed worker's in-flight requests failed, as dropped connections (no 5xx
        # from the survivor): at most one per client thread
        assert len(failed) <= clients, failed
        assert all(not o.isdigit() for o in failed), failed
        assert all(attempt(srv.base, i) == "200" for i in range(10))
    finally:
        srv.close()


def test_bundle_corrupted_while_serving_is_refused_and_the_loaded_model_keeps_answering(
        root, tmp_path):
    srv = Serve(root, tmp_path / "server.log")
    try:
        (bundle,) = [p for p in (root / "toy").iterdir() if p.is_dir()]
        weights = bundle / "model.safetensors"
        data = bytearray(weights.read_bytes())
        data[-16:] = bytes(16)  # same size, other bytes: only the checksum can tell
        weights.write_bytes(bytes(data))

        assert [attempt(srv.base, i) for i in range(10)] == ["200"] * 10  # in memory
        victim, survivor = srv.workers()
        os.kill(victim, signal.SIGKILL)  # its replacement must load the bundle from disk
        t_end = time.monotonic() + 150
        while "could not load toy" not in srv.log.read_text() and time.monotonic() < t_end:
            time.sleep(0.2)
        log = srv.log.read_text()
        assert "checksum mismatch for model.safetensors" in log  # names the bundle and why
        assert "could not load toy" in log

        assert survivor in srv.workers() and victim not in srv.workers()
        readiness = [srv.readyz() for _ in range(20)]
        assert all(s == 503 for s, _ in readiness), readiness
        reasons = {b["error"]["message"] for _, b in readiness}
        assert all("no complete bundle" in r or "1 of 2 workers" in r for r in reasons), reasons
        # the survivor answers from memory; the replacement refuses with 503, never a 500
        outcomes = [attempt(srv.base, i) for i in range(40)]
        assert "200" in outcomes and set(outcomes) <= {"200", "503"}, outcomes
    finally:
        srv.close()
        shutil.rmtree(root, ignore_errors=True)
