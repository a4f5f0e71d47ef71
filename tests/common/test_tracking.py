"""MLflow tracking (common.tracking) against a real `mlflow server` on loopback (SQLite backend):
train/evaluate runs with params, per-epoch metrics and the bundle; alias moves mirrored to the
registry; a dead server never fails a command; without MLFLOW_TRACKING_URI mlflow is not even
imported."""

from __future__ import annotations

import gzip
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from common.aliases import get_aliases
from common.artifacts import list_bundles, load_bundle
from common.cli import main
from common.registry import get_vertical
from common.tracking import _HTTP_DEFAULTS, BUNDLE_TAG, ENV
from nlp.embedded import parallel_phrases

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    d = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != ENV}
    # no background job runner: it spawns huey workers that slow the start and outlive the server
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server",
           "--backend-store-uri", f"sqlite:///{d / 'mlflow.db'}",
           "--artifacts-destination", str(d / "artifacts"),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with open(d / "server.log", "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)  # its own group: stopped as a whole
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # a start guard on a busy CI box, not a measurement
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited: {(d / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not up: {(d / 'server.log').read_text()[-2000:]}")
            time.sleep(0.3)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(autouse=True)
def _restore_http_settings():
    # common.tracking sets mlflow's HTTP retry defaults in os.environ; keep other tests clean
    saved = {k: os.environ.get(k) for k in _HTTP_DEFAULTS}
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _parallel_data(d: Path) -> Path:
    src, tgt = parallel_phrases()
    for name, (lo, hi) in {"train": (64, 192), "val": (0, 32), "test_x": (32, 64)}.items():
        for lang, lines in (("en", src), ("de", tgt)):
            with gzip.open(d / f"{name}.{lang}.gz", "wt", encoding="utf-8") as f:
                f.write("\n".join(lines[lo:hi]) + "\n")
    return d


def _runs(client: MlflowClient, vertical: str) -> list:
    exp = client.get_experiment_by_name(f"verticals-{vertical}")
    assert exp is not None, f"no experiment for {vertical}"
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


def test_train_and_evaluate_log_params_epochs_metrics_and_the_bundle(
    mlflow_uri, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv(ENV, mlflow_uri)
    data = _parallel_data(tmp_path)
    root, work = tmp_path / "store", tmp_path / "work"
    assert main(["train", "nlp-translation", "--root", str(root), "--preset", "test",
                 "--data", str(data), "--epochs", "2", "--device", "cpu",
                 "--work-dir", str(work)]) == 0
    bundle = load_bundle("latest", vertical="nlp-translation", root=root)
    client = MlflowClient(mlflow_uri)
    (run,) = _runs(client, "nlp-translation")
    rid = run.info.run_id
    assert run.info.status == "FINISHED"
    assert run.info.run_name == f"{bundle.name}-{bundle.version}"
    assert run.data.tags["verticals.command"] == "train"
    assert run.data.tags["verticals.bundle_version"] == bundle.version

    # params: the CLI arguments that were set, and the bundle's model config
    p = run.data.params
    assert (p["preset"], p["epochs"], p["data"], p["device"]) == ("test", "2", str(data), "cpu")
    assert "checkpoint" not in p  # an option left unset is not a param
    assert p["model.class"] == bundle.manifest["model"]["class"]
    assert p["model.config.epochs"] == "2" and p["model.config.src"] == "en"

    # per-epoch metrics, step = epoch, exactly the Trainer's metrics.jsonl
    epochs = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in epochs] == [1, 2]
    for name in ("train_loss", "val_loss", "lr"):
        hist = client.get_metric_history(rid, f"epoch/{name}")
        assert [(m.step, m.value) for m in sorted(hist, key=lambda m: m.step)] == [
            (r["epoch"], pytest.approx(r[name])) for r in epochs]
    assert [m.value for m in client.get_metric_history(rid, "epoch/global_step")] == [
        r["step"] for r in epochs]
    # final metrics: the bundle's
    final = {k: v for k, v in bundle.manifest["metrics"].items() if isinstance(v, int | float)}
    assert final and {k: run.data.metrics[k] for k in final} == pytest.approx(final)

    # artifacts: the bundle directory, byte for byte
    logged = {a.path for a in client.list_artifacts(rid, "bundle")}
    assert {"bundle/manifest.json", "bundle/model.safetensors"} <= logged
    got = client.download_artifacts(rid, "bundle/manifest.json", str(tmp_path / "dl"))
    assert Path(got).read_bytes() == (bundle.path / "manifest.json").read_bytes()

    # a registered model version whose source is those artifacts, tagged with the bundle version
    (mv,) = client.search_model_versions("name='verticals-nlp-translation'")
    assert mv.tags[BUNDLE_TAG] == bundle.version and mv.run_id == rid
    assert mv.source == f"{run.info.artifact_uri}/bundle"

    capsys.readouterr()
    out = tmp_path / "report.json"
    assert main(["evaluate", "nlp-translation", "--root", str(root), "--data", str(data),
                 "--test-prefix", "test_x", "--bundle", str(bundle.path), "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)  # stdout stays JSON: mlflow's URL goes to stderr
    report = json.loads(out.read_text())
    assert printed["metrics"] == report["metrics"]
    ev = _runs(client, "nlp-translation")[-1]
    assert ev.info.run_id != rid and ev.info.status == "FINISHED"
    assert ev.data.tags["verticals.command"] == "evaluate"
    assert ev.data.tags["verticals.bundle_version"] == bundle.version
    assert ev.info.run_name.endswith(bundle.version)
    assert ev.data.params["bundle"] == str(bundle.path)
    assert ev.data.params["test_prefix"] == "test_x"
    assert ev.data.params["config.test_prefix"] == "test_x"  # the report's config
    assert ev.data.params["model.class"] == bundle.manifest["model"]["class"]
    numeric = {k: v for k, v in report["metrics"].items() if isinstance(v, int | float)}
    assert {"bleu", "chrf"} <= set(numeric)
    assert {k: ev.data.metrics[k] for k in numeric} == pytest.approx(numeric)
    assert [a.path for a in client.list_artifacts(ev.info.run_id, "report")] == [
        "report/report.json"]
    assert len(client.search_model_versions("name='verticals-nlp-translation'")) == 1


def _registry_aliases(client: MlflowClient, name: str) -> dict[str, str]:
    """{alias: bundle version} of a registered model, read back through the model versions."""
    return {alias: client.get_model_version(name, v).tags[BUNDLE_TAG]
            for alias, v in client.get_registered_model(name).aliases.items()}


def test_alias_moves_are_mirrored_to_the_registry(mlflow_uri, tmp_path, monkeypatch):
    root = tmp_path / "store"
    v0 = get_vertical("toy").train_default(root).version  # before tracking: never logged
    monkeypatch.setenv(ENV, mlflow_uri)
    for _ in range(2):
        assert main(["train", "toy", "--root", str(root)]) == 0
    v1, v2 = [p.name for p in list_bundles(root, "toy")][1:]
    client, name = MlflowClient(mlflow_uri), "verticals-toy"
    assert [r.data.tags["verticals.bundle_version"] for r in _runs(client, "toy")] == [v1, v2]
    by_hand = client.search_model_versions(f"name='{name}' and tags.{BUNDLE_TAG}='{v2}'")[0]
    client.set_registered_model_alias(name, "reviewed", by_hand.version)  # not the store's

    def move(*argv: str) -> dict[str, str]:
        assert main(["models", *argv, "--root", str(root)]) == 0
        mirrored = _registry_aliases(client, name)
        assert mirrored.pop("reviewed") == v2  # an alias the store never managed stays
        assert mirrored == get_aliases(root, "toy")  # MLflow says what aliases.json says
        return mirrored

    assert move("alias", "toy", v1, "candidate") == {"candidate": v1}
    assert move("promote", "toy") == {"production": v1}  # candidate cleared in MLflow too
    assert move("alias", "toy", v2, "candidate") == {"production": v1, "candidate": v2}
    assert move("promote", "toy") == {"production": v2}
    assert move("rollback", "toy") == {"production": v1}
    # a bundle MLflow never saw is logged and registered when an alias first points at it
    assert move("alias", "toy", v0, "staging") == {"production": v1, "staging": v0}
    (mv0,) = client.search_model_versions(f"name='{name}' and tags.{BUNDLE_TAG}='{v0}'")
    run0 = client.get_run(mv0.run_id)
    assert run0.data.tags["verticals.command"] == "alias"
    assert {a.path for a in client.list_artifacts(mv0.run_id, "bundle")} >= {
        "bundle/manifest.json", "bundle/model.safetensors"}
    assert len(client.search_model_versions(f"name='{name}'")) == 3  # one per bundle


def test_a_dead_server_warns_once_and_commands_go_on(tmp_path, monkeypatch, caplog):
    uri = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    monkeypatch.setenv(ENV, uri)
    root = tmp_path / "store"
    caplog.set_level(logging.WARNING, logger="common.tracking")
    assert main(["train", "toy", "--root", str(root)]) == 0
    (version,) = [p.name for p in list_bundles(root, "toy")]
    assert main(["models", "alias", "toy", version, "candidate", "--root", str(root)]) == 0
    assert main(["models", "promote", "toy", "--root", str(root)]) == 0
    assert get_aliases(root, "toy") == {"production": version}
    warnings = [r for r in caplog.records if r.name == "common.tracking"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert uri in warnings[0].getMessage()


_NO_MLFLOW = """
import sys
from common.artifacts import list_bundles
from common.cli import main
root, data = sys.argv[1], sys.argv[2]
assert main(["train", "nlp-translation", "--root", root, "--preset", "test", "--data", data,
             "--epochs", "1", "--device", "cpu"]) == 0
assert main(["evaluate", "nlp-translation", "--root", root, "--data", data, "--test-prefix",
             "test_x", "--bundle", "latest", "--out", root + "/report.json"]) == 0
version = list_bundles(root, "nlp-translation")[-1].name
assert main(["models", "alias", "nlp-translation", version, "candidate", "--root", root]) == 0
assert main(["models", "promote", "nlp-translation", "--root", root]) == 0
print("MLFLOW_IMPORTED", "mlflow" in sys.modules)
"""


def test_without_the_variable_mlflow_is_not_imported(tmp_path):
    # a fresh interpreter: this one imported mlflow for the tests above
    data = _parallel_data(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != ENV}
    env.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    res = subprocess.run([sys.executable, "-c", _NO_MLFLOW, str(tmp_path / "store"), str(data)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "MLFLOW_IMPORTED False" in res.stdout.splitlines()
    assert get_aliases(tmp_path / "store", "nlp-translation")["production"]
