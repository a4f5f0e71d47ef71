"""deploy/prometheus/ against real Prometheus tools (Debian package `prometheus`).

- promtool checks the scrape config and the rules and runs the rules' unit tests (tests.yml);
- end to end: `verticals serve` (fraud) and a real Prometheus server on free loopback ports,
  scraping /metrics every second and evaluating our alerts.yml (with `for:` shortened to 1 s;
  the expressions are the shipped ones). A replay with shifted amounts makes
  VerticalsDriftDetected fire in Prometheus's /api/v1/alerts; an in-distribution replay does not.

Missing tools fail the test, never skip it: CI installs the package (see .ci/run).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "prometheus"
WINDOW = 100  # VERTICALS_MONITOR_WINDOW for the server under test
ALERT = "VerticalsDriftDetected"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH: install the Debian package `prometheus`")
    return path


def promtool(*args: str, cwd: Path = DEPLOY) -> str:
    r = subprocess.run([tool("promtool"), *args], cwd=cwd, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


# ---- promtool (fast) ---------------------------------------------------------------------

def test_scrape_config_is_valid():
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")


def test_rules_are_valid_and_cover_the_issue():
    out = promtool("check", "rules", "alerts.yml")
    names = {r["alert"] for g in yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"]
             for r in g["rules"]}
    assert {"VerticalsDriftDetected", "VerticalsEstimatedPerformanceDrop",
            "VerticalsRealisedPerformanceDrop", "VerticalsHighErrorRate",
            "VerticalsLoadShedding", "VerticalsQueueSaturated"} <= names
    assert f"{len(names)} rules found" in out


def test_rules_unit_tests_pass():
    assert "SUCCESS" in promtool("test", "rules", "tests.yml")


def test_every_alerting_rule_has_a_unit_test():
    rules = {r["alert"] for g in yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"]
             for r in g["rules"]}
    tested = {t["alertname"] for case in yaml.safe_load((DEPLOY / "tests.yml").read_text())["tests"]
              for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    assert rules == tested


# ---- real servers ------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 5) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.load(r)


def wait_for(what: str, probe, seconds: float, proc: subprocess.Popen | None = None):
    """Poll probe() until truthy; fail naming `what` (with the process's stderr if it died)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited ({proc.returncode}): "
                               + (proc.stderr.read() if proc.stderr else ""))
        try:
            value = probe()
            if value:
                return value
        except (urllib.error.URLError, ConnectionError, OSError, KeyError, ValueError):
            pass
        time.sleep(0.3)
    raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def fraud_root(tmp_path_factory):
    from common.registry import get_vertical

    root = tmp_path_factory.mktemp("prom-bundles")
    get_vertical("fraud").train_default(root, preset="test")
    return root


def start_server(request, root: Path, log_dir: Path) -> str:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VERTICALS_MONITOR_WINDOW": str(WINDOW),
           "VERTICALS_LOG_DIR": str(log_dir), "OMP_NUM_THREADS": "1"}
    for k in ("PROMETHEUS_MULTIPROC_DIR", "VERTICALS_MONITORING", "VERTICALS_API_KEY",
              "VERTICALS_API_KEYS_FILE"):
        env.pop(k, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "common.cli", "serve", "--verticals", "fraud", "--root", str(root),
         "--port", str(port)],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    request.addfinalizer(lambda: stop(proc))
    base = f"http://127.0.0.1:{port}"
    wait_for("the server to be ready", lambda: get_json(base + "/readyz", 2)["ready"], 120, proc)
    return base


def start_prometheus(request, tmp: Path, target: str) -> str:
    """Prometheus scraping `target` every second, with our rules evaluated every second."""
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:  # same expressions, shorter hold: the test runs in seconds
                rule["for"] = "1s"
    (tmp / "alerts.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["scrape_configs"][0]["static_configs"] = [{"targets": [target]}]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    promtool("check", "config", "prometheus.yml", cwd=tmp)  # the test copy is valid too
    port = free_port()
    proc = subprocess.Popen(
        [tool("prometheus"), f"--config.file={tmp / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
        cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    request.addfinalizer(lambda: stop(proc))
    base = f"http://127.0.0.1:{port}"
    wait_for("Prometheus to be ready",
             lambda: urllib.request.urlopen(base + "/-/ready", timeout=2).status == 200, 60, proc)

    def scraped():
        res = query(base, 'up{job="verticals"}')
        return res and res[0]["value"][1] == "1"

    wait_for("Prometheus to scrape the server", scraped, 30, proc)
    return base


def query(prom: str, expr: str) -> list[dict]:
    url = prom + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    return get_json(url)["data"]["result"]


def alerts(prom: str, name: str) -> list[dict]:
    return [a for a in get_json(prom + "/api/v1/alerts")["data"]["alerts"]
            if a["labels"].get("alertname") == name]


def transactions(shift_amount: float, n: int) -> list[dict]:
    """The `test` preset's simulator continued a week past the bundle's training data (same
    seed and sizes, so the same customers and terminals), amounts times `shift_amount`."""
    from fraud_detection.data import SimConfig, simulate
    from fraud_detection.vertical import _END, PRESETS

    p = {**PRESETS["test"], "n_days": PRESETS["test"]["n_days"] + 7}
    start = (_END - pd.Timedelta(days=PRESETS["test"]["n_days"])).strftime("%Y-%m-%d")
    df = simulate(SimConfig(**p, start_date=start), seed=0)
    df = df[df["TX_DATETIME"] >= _END].head(n)
    assert len(df) == n, "the simulated week is shorter than the replay"
    return [{"transaction_id": 50_000_000 + i, "timestamp": ts.isoformat(),
             "customer_id": int(c), "terminal_id": int(t),
             "amount": round(float(a) * shift_amount, 2)}
            for i, (ts, c, t, a) in enumerate(zip(df["TX_DATETIME"], df["CUSTOMER_ID"],
                                                  df["TERMINAL_ID"], df["TX_AMOUNT"], strict=True))]


def replay(base: str, txs: list[dict]) -> None:
    def post(tx):
        req = urllib.request.Request(base + "/fraud/v1/score", data=json.dumps(tx).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status

    with ThreadPoolExecutor(4) as pool:
        assert set(pool.map(post, txs)) == {200}


def windows_seen(prom: str, n: int):
    res = query(prom, 'sum(verticals_monitor_windows_total{vertical="fraud"})')
    return res and float(res[0]["value"][1]) >= n


@pytest.mark.slow
def test_drift_replay_fires_the_drift_alert(request, fraud_root, tmp_path):
    base = start_server(request, fraud_root, tmp_path / "log")
    prom = start_prometheus(request, tmp_path, base.removeprefix("http://"))
    replay(base, transactions(shift_amount=4.0, n=4 * WINDOW))
    wait_for("the windows to reach Prometheus", lambda: windows_seen(prom, 2), 60)
    firing = wait_for(f"{ALERT} to fire",
                      lambda: [a for a in alerts(prom, ALERT) if a["state"] == "firing"], 60)
    assert firing[0]["labels"]["vertical"] == "fraud"
    assert firing[0]["labels"]["severity"] == "warning"
    # the shifted input is among the drifted ones, as Prometheus sees the per-feature gauges
    drifted = query(prom, 'max by (feature) (verticals_drift_statistic{vertical="fraud"}) > '
                          'on (feature) max by (feature) (verticals_drift_threshold'
                          '{vertical="fraud"})')
    assert "TX_AMOUNT" in {r["metric"]["feature"] for r in drifted}


@pytest.mark.slow
def test_in_distribution_replay_does_not_fire(request, fraud_root, tmp_path):
    base = start_server(request, fraud_root, tmp_path / "log")
    prom = start_prometheus(request, tmp_path, base.removeprefix("http://"))
    replay(base, transactions(shift_amount=1.0, n=4 * WINDOW))
    wait_for("the windows to reach Prometheus", lambda: windows_seen(prom, 3), 60)
    time.sleep(4)  # several more scrapes and rule evaluations (1 s each; `for` is 1 s)
    assert query(prom, 'max(verticals_drift_detected{vertical="fraud"})'), "no drift gauge"
    drifted = query(prom, 'max by (feature) (verticals_drift_statistic{vertical="fraud"}) > '
                          'on (feature) max by (feature) (verticals_drift_threshold'
                          '{vertical="fraud"})')
    assert alerts(prom, ALERT) == [], f"drifted: {[r['metric']['feature'] for r in drifted]}"
