"""`verticals serve --workers 2 --log-dir`: each worker writes its own segments into the one
log, feedback is accepted by any worker, and realised performance (from the shared log) is the
same whichever worker answers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.common.toy_vertical import train_toy

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base: str, path: str, body: dict | None = None, rid: str | None = None) -> dict:
    headers = {"Content-Type": "application/json", **({"X-Request-ID": rid} if rid else {})}
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, headers=headers)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def test_two_workers_share_the_log_and_agree_on_realised(tmp_path):
    root, logs = tmp_path / "store", tmp_path / "logs"
    train_toy(root, steps=40, profile=True)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "OMP_WAIT_POLICY": "PASSIVE", "VERTICALS_EXTRA_PLUGINS": "tests.common.toy_vertical",
           "VERTICALS_MONITOR_WINDOW": "20", "VERTICALS_LOG_FLUSH_S": "0.1",
           "VERTICALS_MONITOR_REALISED_S": "0.2"}
    for var in ("PROMETHEUS_MULTIPROC_DIR", "VERTICALS_LOG_DIR", "VERTICALS_MONITORING"):
        env.pop(var, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "common.cli", "serve", "--verticals", "toy", "--root", str(root),
         "--port", str(port), "--workers", "2", "--log-dir", str(logs)],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        t_end = time.monotonic() + 90
        while True:
            try:
                if call(base, "/readyz")["ready"]:
                    break
            except OSError:
                pass
            assert time.monotonic() < t_end and proc.poll() is None, "server did not start"
            time.sleep(0.2)
        x = np.random.default_rng(0).normal(size=(120, 4))
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: call(base, "/toy/v1/predict", {"x": list(x[i])}, f"q{i}"),
                          range(len(x))))
        seg_pids: set[str] = set()
        t_end = time.monotonic() + 30
        while time.monotonic() < t_end:
            segs = list((logs / "toy").glob("date=*/*.parquet"))
            if sum(pq.read_metadata(s).num_rows for s in segs) == len(x):
                seg_pids = {s.name.split("-")[-3] for s in segs}
                break
            time.sleep(0.1)
        assert seg_pids, "not every answer reached the log"
        labels = [{"id": f"q{i}", "label": int(x[i, 0] + x[i, 1] > 0)} for i in range(len(x))]
        assert call(base, "/toy/v1/feedback", {"feedback": labels})["accepted"] == len(x)
        seen: dict[int, dict] = {}
        t_end = time.monotonic() + 30
        while time.monotonic() < t_end and len(seen) < len(seg_pids):
            body = call(base, "/v1/monitoring/toy")
            real = [v["realised"] for v in body["versions"].values()]
            if real and real[0].get("n_labels") == len(x):
                seen[body["process"]] = real[0]
            time.sleep(0.05)
        assert {str(p) for p in seen} == seg_pids  # the answering pids are the writers
        assert len({json.dumps(r, sort_keys=True) for r in seen.values()}) == 1
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
