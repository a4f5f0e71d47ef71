"""A real server process on loopback: several workers with aggregated /metrics, and graceful
drain on SIGTERM (requests in flight are answered, the process ends)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import tests.common.toy_vertical  # noqa: F401
from common.registry import get_vertical

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(root, workers: int, delay: float | None = None):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "VERTICALS_EXTRA_PLUGINS": "tests.common.toy_vertical"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if delay:
        env["TOY_DELAY_S"] = str(delay)
    proc = subprocess.Popen(
        [sys.executable, "-m", "common.cli", "serve", "--verticals", "toy", "--root", str(root),
         "--port", str(port), "--workers", str(workers)],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if json.load(urllib.request.urlopen(base + "/readyz", timeout=2))["ready"]:
                return proc, base
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not become ready: " + (proc.stderr.read() or ""))


def post(base: str, body: dict, timeout: float = 30) -> tuple[int, dict]:
    req = urllib.request.Request(base + "/toy/v1/predict", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("e2e")
    get_vertical("toy").train_default(r)
    return r


def test_metrics_are_aggregated_across_workers(root):
    proc, base = start(root, workers=2)
    try:
        n = 40
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda i: post(base, {"x": [i, 1, 2, 3]})[0], range(n)))
        assert codes == [200] * n
        text = urllib.request.urlopen(base + "/metrics").read().decode()
        count = sum(float(line.split()[-1]) for line in text.splitlines()
                    if line.startswith("verticals_requests_total{")
                    and 'route="/toy/v1/predict"' in line and 'status="200"' in line)
        assert count == n
        assert post(base, {"x": [1]})[0] == 422
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_sigterm_drains_in_flight_requests(root):
    proc, base = start(root, workers=1, delay=0.4)
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(post, base, {"x": [i, 0, 0, 0]}) for i in range(6)]
        time.sleep(0.2)  # all six are in flight (one batch running, the rest queued)
        proc.send_signal(signal.SIGTERM)
        results = [f.result() for f in futures]
    assert [code for code, _ in results] == [200] * 6
    # uvicorn re-raises SIGTERM after its graceful shutdown, so "killed by SIGTERM" is clean
    assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
