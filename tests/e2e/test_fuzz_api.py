"""Schemathesis fuzzes every route of a real server running all verticals, against the server's
own live OpenAPI document, with every check (`--checks all`): no 5xx, no response outside its
schema, every status code and content type documented, every schema-valid request accepted
and every schema-violating one refused, auth not ignorable, and the stateful links followed.

The server is `verticals serve` on a free loopback port (one uvicorn process), with API keys on
and test-preset bundles of every vertical trained into a temporary store. The summary
(operations, cases, failures, duration) goes to reports/fuzz/schemathesis.json.

Run alone:  OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q -s tests/e2e/test_fuzz_api.py
Knobs: VERTICALS_FUZZ_EXAMPLES (default 100 per operation), VERTICALS_FUZZ_SEED (default 1).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import schemathesis  # noqa: F401  the fuzzer must be installed: a missing one fails, not skips

from common.registry import get_vertical, list_verticals

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "reports" / "fuzz" / "schemathesis.json"
EXAMPLES = int(os.environ.get("VERTICALS_FUZZ_EXAMPLES", "100"))
SEED = int(os.environ.get("VERTICALS_FUZZ_SEED", "1"))
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base URL, API key, server log path) of a real server with every vertical loaded."""
    home = tmp_path_factory.mktemp("fuzz-home")
    names = [n for n in list_verticals() if n != "toy"]  # toy: a test plugin, not installed
    for name in names:
        get_vertical(name).train_default(home, preset="test")
    key = secrets.token_urlsafe(24)
    port = free_port()
    log_path = home / "server.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VERTICALS_API_KEY": key,
           "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    for var in ("PROMETHEUS_MULTIPROC_DIR", "VERTICALS_API_KEYS_FILE", "VERTICALS_EXTRA_PLUGINS"):
        env.pop(var, None)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "common.cli", "serve", "--root", str(home),
             "--verticals", ",".join(names), "--port", str(port)],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        models = _wait_ready(base, proc, log_path)
        assert sorted(models) == sorted(names) and len(names) >= 5, models
        yield base, key, log_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(base: str, proc: subprocess.Popen, log_path: Path) -> dict[str, bool]:
    import urllib.error
    import urllib.request

    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited: " + log_path.read_text()[-3000:])
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=2) as r:
                body = json.load(r)
                if body["ready"]:
                    return body["models"]
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.3)
    raise RuntimeError("server not ready in 180 s: " + log_path.read_text()[-3000:])


def run_schemathesis(base: str, key: str, out_dir: Path) -> tuple[dict, str, float]:
    """One `st run` over the live schema; (its JSON report, its console output, wall time)."""
    st = Path(sys.executable).with_name("st")
    cmd = [str(st), "run", base + "/openapi.json", "--checks", "all",
           "--max-examples", str(EXAMPLES), "--seed", str(SEED), "--workers", "2",
           # `--checks all` includes a response-time check (default 10 s). The bound the API
           # documents is the server's deadline (30 s, then a 504, which not_a_server_error
           # fails anyway); a 1,000-transaction batch or 64 texts to translate take 10-16 s on
           # a busy 2-core box, so the limit is that deadline, not the default.
           "--max-response-time", "30", "--request-timeout", "60",
           "--generation-database", "none",
           "--report", "json", "--report-dir", str(out_dir), "--no-color",
           "--output-sanitize", "false", "-H", f"X-API-Key: {key}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SCHEMATHESIS_HOOKS": "tests.e2e.fuzz_hooks"}
    t0 = time.monotonic()
    done = subprocess.run(cmd, env=env, cwd=out_dir, capture_output=True, text=True,
                          timeout=900)
    wall = time.monotonic() - t0
    reports = sorted(out_dir.glob("json-*.json"))
    assert reports, f"schemathesis wrote no report:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return json.loads(reports[-1].read_text()), done.stdout.replace(key, "<api-key>"), wall


def summarise(report: dict, console: str, wall_s: float) -> dict:
    links = re.search(r"API Links:\s+(\d+) covered / (\d+) selected / (\d+) total", console)
    return {
        "tool": f"schemathesis {report['schemathesis_version']}",
        "checks": "all",
        "max_examples_per_operation": EXAMPLES,
        "seed": report["seed"],
        "operations": report["operations"],
        "phases": {k: v["status"] for k, v in report["phases"].items()},
        "test_cases": report["test_cases"],
        "links": ({"covered": int(links[1]), "selected": int(links[2]), "total": int(links[3])}
                  if links else None),
        "failures": report["failures"],
        "errors": report["errors"],
        "duration_s": round(report["running_time"], 1),
        "wall_s": round(wall_s, 1),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def test_every_route_survives_schemathesis(server, tmp_path):
    base, key, log_path = server
    report, console, wall = run_schemathesis(base, key, tmp_path)
    summary = summarise(report, console, wall)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(summary, indent=2) + "\n")
    print("\n" + json.dumps(summary, indent=2))
    detail = f"\n{console[-12000:]}\nserver log tail:\n{log_path.read_text()[-3000:]}"
    ops = summary["operations"]
    assert ops["tested"] == ops["selected"] == ops["total"] >= 13, detail
    assert summary["failures"] == [] and summary["test_cases"]["with_failures"] == 0, detail
    assert summary["errors"] == [] and summary["test_cases"]["errored"] == 0, detail
    assert all(status == "success" for status in summary["phases"].values()), detail
    links = summary["links"]
    assert links and links["covered"] == links["total"] >= 6, detail
    assert report["exit_code"] == 0, detail
