"""Monitoring in the server: every answer logged with its request id and version, windows per
version with drift and estimated performance, feedback joined into realised performance, the
JSON route and the gauges, model swaps, and the start-up check of the log directory."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from common.aliases import set_alias
from common.errors import VerticalsError
from common.serving.app import create_app
from common.serving.prom import render
from tests.common.toy_vertical import train_toy

WINDOW = 50


@pytest.fixture()
def env(monkeypatch, tmp_path):
    monkeypatch.setenv("VERTICALS_MONITOR_WINDOW", str(WINDOW))
    monkeypatch.setenv("VERTICALS_LOG_FLUSH_S", "0.02")
    monkeypatch.setenv("VERTICALS_MONITOR_REALISED_S", "0.05")
    for var in ("VERTICALS_LOG_DIR", "VERTICALS_MONITORING", "VERTICALS_SERVE_CONFIG"):
        monkeypatch.setenv(var, "")  # records the old value: `verticals serve` sets some
        monkeypatch.delenv(var)
    return tmp_path


@pytest.fixture(scope="module")
def monitored_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("monitored")
    return root, train_toy(root, steps=40, profile=True), train_toy(root, steps=60, profile=True)


def send(client, x, start=0, prefix="r"):
    for i, row in enumerate(x):
        r = client.post("/toy/v1/predict", json={"x": [float(v) for v in row]},
                        headers={"X-Request-ID": f"{prefix}{start + i}"})
        assert r.status_code == 200, r.text


def wait_for(client, pred, vertical="toy", timeout_s=20.0):
    t_end = time.monotonic() + timeout_s
    while True:
        body = client.get(f"/v1/monitoring/{vertical}").json()
        if pred(body) or time.monotonic() > t_end:
            return body
        time.sleep(0.05)


def metric(name: str, **labels: str) -> float | None:
    for line in render()[0].decode().splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_windows_feedback_and_realised_performance(env, monitored_store):
    root, b1, _ = monitored_store
    set_alias(root, "toy", b1.version, "production")
    app = create_app(["toy"], root=root, alias_poll_s=0, log_dir=env / "logs")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2 * WINDOW, 4)).astype(np.float32)
    with TestClient(app) as client:
        send(client, x)
        body = wait_for(client, lambda b: b["versions"].get(b1.version, {}).get("windows") == 2)
        assert body["enabled"] and body["reason"] is None and body["process"] == os.getpid()
        v = body["versions"][b1.version]
        assert v["requests"] == 2 * WINDOW and v["monitored"]
        last = v["last_window"]
        assert set(last["drift"]) == {"a", "b", "c", "d", "sign", "score"}
        assert last["n"] == WINDOW and not last["drift_detected"]
        assert 0.5 < last["estimated"]["accuracy"] <= 1 and "roc_auc" in last["estimated"]
        assert v["reference"]["accuracy"] > 0.5
        log_df = app.state.monitors["toy"].log.read()
        assert list(log_df["request_id"]) == [f"r{i}" for i in range(2 * WINDOW)]
        assert set(log_df["model_version"]) == {b1.version}

        labels = [{"id": f"r{i}", "label": int(x[i, 0] + x[i, 1] > 0)} for i in range(80)]
        r = client.post("/toy/v1/feedback", json={"feedback": [*labels, {"id": "zz", "label": 1}]})
        assert r.status_code == 200, r.text
        assert r.json() == {"accepted": 80, "unknown": 1, "unknown_ids": ["zz"]}
        body = wait_for(client, lambda b: b["versions"][b1.version]["realised"])
        real = body["versions"][b1.version]["realised"]
        assert real["n_labels"] == 80 and 0.5 < real["accuracy"] <= 1 and "roc_auc" in real
        assert body["feedback"] == {"accepted": 80, "unknown": 1}
        bad = client.post("/toy/v1/feedback", json={"feedback": [{"id": "r1", "label": "yes"}]})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "feedback.0.label"

    # gauges, labelled by vertical, version and feature
    v = b1.version
    assert metric("verticals_monitoring_enabled", vertical="toy", version=v) == 1
    assert metric("verticals_drift_threshold", vertical="toy", version=v, feature="a") > 0
    assert metric("verticals_drift_statistic", vertical="toy", version=v, feature="score") >= 0
    assert metric("verticals_drift_detected", vertical="toy", version=v) == 0
    assert metric("verticals_monitor_windows_total", vertical="toy", version=v) == 2
    assert metric("verticals_estimated_performance", vertical="toy", version=v,
                  metric="roc_auc") > 0.5
    assert metric("verticals_realised_performance", vertical="toy", version=v,
                  metric="accuracy") == pytest.approx(real["accuracy"])
    assert metric("verticals_reference_performance", vertical="toy", version=v,
                  metric="accuracy") > 0.5
    assert metric("verticals_prediction_log_rows_total", vertical="toy") >= 2 * WINDOW
    assert metric("verticals_feedback_total", vertical="toy", outcome="unknown") >= 1


def test_shifted_inputs_drift_and_a_swap_starts_new_windows(env, monitored_store):
    root, b1, b2 = monitored_store
    set_alias(root, "toy", b1.version, "production")
    app = create_app(["toy"], root=root, alias_poll_s=0, log_dir=env / "logs")
    rng = np.random.default_rng(1)
    with TestClient(app) as client:
        shifted = rng.normal(size=(WINDOW, 4)).astype(np.float32)
        shifted[:, 0] += 1.5
        send(client, shifted)
        body = wait_for(client, lambda b: b["versions"].get(b1.version, {}).get("windows"))
        last = body["versions"][b1.version]["last_window"]
        assert last["drift_detected"] and last["drift"]["a"]["drift"]
        assert not last["drift"]["c"]["drift"]
        set_alias(root, "toy", b2.version, "production")
        assert client.portal.call(app.state.follower.check_once) == ["toy"]
        send(client, rng.normal(size=(WINDOW, 4)), start=WINDOW)
        body = wait_for(client, lambda b: b["versions"].get(b2.version, {}).get("windows"))
        assert body["versions"][b1.version]["windows"] == 1  # the old version's windows stay
        new = body["versions"][b2.version]
        assert new["windows"] == 1 and not new["last_window"]["drift_detected"]
        assert new["reference"] != body["versions"][b1.version]["reference"]  # its own profile


def test_bundle_without_profile_is_logged_but_not_monitored(env, toy_root):
    app = create_app(["toy"], root=toy_root, alias_poll_s=0, log_dir=env / "logs")
    with TestClient(app) as client:
        send(client, np.zeros((3, 4)))
        body = wait_for(client, lambda b: b["log"]["rows"] == 3)
        assert not body["enabled"] and "has no reference profile" in body["reason"]
        (version,) = body["versions"]
        assert body["versions"][version]["monitored"] is False
        assert body["versions"][version]["windows"] == 0
        r = client.get("/v1/monitoring/nope")
        assert r.status_code == 404 and r.json()["error"]["field"] == "vertical"


def test_monitoring_off_logs_nothing(env, toy_root, monkeypatch):
    monkeypatch.setenv("VERTICALS_MONITORING", "0")
    app = create_app(["toy"], root=toy_root, alias_poll_s=0, log_dir=env / "logs")
    with TestClient(app) as client:
        send(client, np.zeros((3, 4)))
        body = client.get("/v1/monitoring/toy").json()
        assert not body["enabled"] and "VERTICALS_MONITORING=0" in body["reason"]
        assert body["log"]["rows"] == 0 and body["versions"] == {}
    assert not list((env / "logs").rglob("*.parquet"))


def test_unwritable_log_dir_refuses_to_start(env, toy_root, capsys):
    from common.cli import main

    blocker = env / "file"
    blocker.write_text("x")
    with pytest.raises(VerticalsError, match="is not writable"):
        create_app(["toy"], root=toy_root, log_dir=blocker / "logs")
    code = main(["serve", "--root", str(toy_root), "--verticals", "toy", "--log-dir",
                 str(blocker / "logs")])
    err = capsys.readouterr().err.strip()
    assert code != 0 and err.startswith("error: prediction log directory") and "\n" not in err


def test_bad_monitoring_setting_is_one_clear_error(env, toy_root, monkeypatch):
    monkeypatch.setenv("VERTICALS_MONITOR_WINDOW", "many")
    with pytest.raises(VerticalsError, match="VERTICALS_MONITOR_WINDOW='many' is not an integer"):
        create_app(["toy"], root=toy_root, log_dir=env / "logs")


def test_workers_keep_own_windows_and_agree_on_realised_from_the_shared_log(env, monitored_store):
    """Two Monitors on one log directory stand for two worker processes."""
    import asyncio

    from common.monitoring.monitor import Monitor, MonitorSettings
    from common.serving.middleware import request_id
    from common.serving.served import ServedPredictor
    from tests.common.toy_vertical import ToyPredictor, ToyRequest

    root, b1, _ = monitored_store
    settings = MonitorSettings.from_env(root, env / "logs")
    workers = [Monitor("toy", "binary", settings) for _ in range(2)]
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 4)).astype(np.float32)

    async def serve(m: Monitor, rows: np.ndarray, rid: str) -> None:
        s = ServedPredictor(ToyPredictor.load(b1.path))
        s.monitor = m
        await s.start()
        request_id.set(rid)  # as the middleware does for one HTTP request
        await s.predict_many([ToyRequest(x=[float(v) for v in r]) for r in rows])
        await s.stop()
        m.log.flush()

    asyncio.run(serve(workers[0], x[:25], "w0"))
    asyncio.run(serve(workers[1], x[25:], "w1"))
    # a batch route's items are logged as <request id>.<k>
    logged = set(workers[1].log.read()["request_id"])
    assert {i for i in logged if i.startswith("w1")} == {f"w1.{k}" for k in range(15)}
    snaps = [m.snapshot() for m in workers]
    assert [s["versions"][b1.version]["requests"] for s in snaps] == [25, 15]
    ids = [f"w0.{k}" for k in range(25)] + [f"w1.{k}" for k in range(15)]
    labels = [{"id": i, "label": int(r[0] + r[1] > 0)} for i, r in zip(ids, x, strict=True)]
    assert workers[0].record_feedback(labels)["accepted"] == 40  # w1's rows: found by DuckDB
    first, second = (m.refresh_realised()[b1.version] for m in workers)
    assert first == second and first["n_labels"] == 40


def test_a_failing_monitor_record_never_fails_an_answer(env, monitored_store, caplog):
    from common.monitoring.monitor import Monitor, MonitorSettings
    from tests.common.toy_vertical import ToyPredictor, ToyRequest

    class Broken(ToyPredictor):
        def monitor_record(self, request, output, response):
            raise KeyError("oops")

    root, b1, _ = monitored_store
    m = Monitor("toy", "binary", MonitorSettings.from_env(root, env / "logs"))
    p = Broken.load(b1.path)
    reqs = [ToyRequest(x=[0.1, 0.2, 0.3, 0.4])] * 3
    assert p.run_each(reqs, monitor=m.bind(["a", "b", "c"])) == p.run_each(reqs)
    assert m.log.flush() == 0 and "monitor_record failed" in caplog.text
