"""Experiment tracking in MLflow, where many teams already keep their runs.

Active only while `MLFLOW_TRACKING_URI` is set (and the extra is installed:
`pip install 'verticals[mlflow]'`); otherwise every entry point returns at once and `mlflow` is
never imported.

    MLFLOW_TRACKING_URI=http://mlflow:5000 verticals train fraud
    MLFLOW_TRACKING_URI=http://mlflow:5000 verticals models promote fraud

- `verticals train` / `evaluate`: one run per command in experiment `verticals-<vertical>`.
  Params: the CLI arguments that were set, the bundle's model config (`model.*`) and, for
  `evaluate`, the report's config (`config.*`). Metrics: every Trainer epoch as `epoch/<name>`
  with step = epoch (its optimiser step as `epoch/global_step`; from a command's second Trainer
  on, the k-th logs `epoch/fit<k>.<name>`), then the bundle's metrics (train) or the report's
  (evaluate) under their own names. Artifacts: the bundle directory under `bundle/` (train),
  the report under `report/` (evaluate).
- A trained bundle becomes a version of registered model `verticals-<vertical>` whose source is
  those artifacts, tagged `bundle_version`; alias moves (`set_alias`, `promote`, `rollback`)
  are mirrored onto that model's aliases. Each move re-syncs every alias of the vertical, so a
  move MLflow missed (server down) is repaired by the next one; a bundle never logged before is
  logged and registered at alias time, in a run of its own.

MLflow is a mirror, never the source of truth (the bundle store and `aliases.json` are): a
failure of MLflow (server down, bad URI, missing package) never fails training, evaluation or
an alias move. It is logged as one warning, and this process leaves that tracking URI alone for
`_COOLDOWN_S` seconds, so a long training run does not wait on a dead server every epoch.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common.reports import flatten

__all__ = ["ENV", "enabled", "experiment_name", "command_run", "TrackedRun", "mirror_aliases"]
log = logging.getLogger(__name__)

ENV = "MLFLOW_TRACKING_URI"
BUNDLE_TAG = "bundle_version"
_COOLDOWN_S = 120.0
# mlflow's default HTTP retry budget (7 retries, exponential backoff) waits ~4 minutes on a dead
# server: right for a rate-limited SaaS, wrong for a mirror in the path of a training command.
# Set these variables yourself to override.
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
_MAX_PARAM_LEN = 6000  # MLflow's limit on a param value
_BATCH = 100  # MLflow's limit on params per log_batch call
_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-. /:]")
_NOT_PARAMS = frozenset({"command", "vertical", "verbose"})
_down_until: dict[str, float] = {}  # tracking URI -> monotonic time until which it is skipped


def enabled() -> bool:
    """True when MLFLOW_TRACKING_URI is set (non-empty)."""
    return bool(os.environ.get(ENV))


def experiment_name(vertical: str) -> str:
    """The experiment (and registered model) name of a vertical: `verticals-<vertical>`."""
    return f"verticals-{vertical}"


def _uri() -> str:
    return os.environ.get(ENV, "")


def _usable() -> bool:
    return enabled() and _down_until.get(_uri(), 0.0) <= time.monotonic()


def _failed(what: str, e: BaseException) -> None:
    uri = _uri()
    already_down = not _usable()
    _down_until[uri] = time.monotonic() + _COOLDOWN_S
    if already_down:  # one warning per outage, not one per skipped call
        return
    log.warning("MLflow tracking at %s failed (%s: %s: %s); going on without it for %.0f s",
                uri, what, type(e).__name__, " ".join(str(e).split())[:300], _COOLDOWN_S)


@contextlib.contextmanager
def _guard(what: str) -> Iterator[None]:
    # Any exception: the mirror must never fail the command it mirrors (see module docstring).
    try:
        yield
    except Exception as e:
        _failed(what, e)


def _client():
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as e:
        raise RuntimeError(f"{ENV} is set but mlflow is not installed "
                           "(pip install 'verticals[mlflow]')") from e
    for k, v in _HTTP_DEFAULTS.items():
        os.environ.setdefault(k, v)
    return MlflowClient(_uri())


def _key(k: str) -> str:
    return _KEY_BAD.sub("_", k)[:250]



def _param_value(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return s if len(s) <= _MAX_PARAM_LEN else s[: _MAX_PARAM_LEN - 3] + "..."


def _numbers(d: dict[str, Any]) -> dict[str, float]:
    return {_key(k): float(v) for k, v in flatten(d).items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


def _get_or_create_experiment(client, name: str) -> str:
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:  # created by a concurrent command in between
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


class TrackedRun:
    """One MLflow run of one `train` / `evaluate` command (see the module docstring)."""

    def __init__(self, client, run_id: str, vertical: str):
        self.client, self.run_id, self.vertical = client, run_id, vertical
        self._fits: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._n_fits = 0
        self._params: set[str] = set()

    # ---- logging ------------------------------------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        """Flattened, stringified; a key already logged in this run keeps its first value."""
        from mlflow.entities import Param

        flat = {_key(k): v for k, v in flatten(params).items() if v is not None}
        fresh = [Param(k, _param_value(v)) for k, v in flat.items() if k not in self._params]
        for i in range(0, len(fresh), _BATCH):
            with _guard("log params"):
                if _usable():
                    self.client.log_batch(self.run_id, params=fresh[i : i + _BATCH])
                    self._params.update(p.key for p in fresh[i : i + _BATCH])

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in metrics.items()]
        with _guard("log metrics"):
            if batch and _usable():
                self.client.log_batch(self.run_id, metrics=batch)

    def log_epoch(self, trainer: Any, record: dict[str, float]) -> None:
        """Epoch observer (common.train.observe_epochs): one point per metric, step = epoch."""
        if trainer not in self._fits:
            self._n_fits += 1
            self._fits[trainer] = self._n_fits
        fit = self._fits[trainer]
        prefix = "epoch/" if fit == 1 else f"epoch/fit{fit}."
        # "step" in a record is the optimiser step; here the step axis is the epoch
        values = {("global_step" if k == "step" else k): v for k, v in record.items()
                  if k != "epoch"}
        self.log_metrics({prefix + k: v for k, v in _numbers(values).items()},
                         step=int(record["epoch"]))

    def log_bundle(self, bundle: Any) -> None:
        """A published bundle: tags, model config, metrics, files, and a registered version."""
        m = bundle.manifest
        with _guard("log bundle"):
            if not _usable():
                return
            self.client.set_tag(self.run_id, "verticals.bundle_version", bundle.version)
            self.client.set_tag(self.run_id, "verticals.bundle_name", bundle.name)
            self.client.update_run(self.run_id, name=f"{bundle.name}-{bundle.version}")
        self.log_params({"model": {"class": m.get("model", {}).get("class"),
                                   "config": bundle.model_config}})
        self.log_metrics(_numbers(m.get("metrics", {})))
        with _guard("log bundle files"):
            if _usable():
                self.client.log_artifacts(self.run_id, str(bundle.path), "bundle")
                _register(self.client, self.vertical, bundle.version, self.run_id)

    def log_report(self, report: dict[str, Any], path: str | Path,
                   root: str | Path | None = None) -> None:
        """An evaluation report: its config, metrics and the JSON file itself, and the model
        config of the bundle it scored (when it scored one from the store)."""
        from common.artifacts import load_bundle
        from common.errors import VerticalsError

        name = f"evaluate-{report.get('protocol')}-{report.get('dataset')}"
        bundle = None
        if report.get("bundle"):
            with contextlib.suppress(VerticalsError):  # a path that is gone: no config to log
                bundle = load_bundle(report["bundle"], vertical=self.vertical, root=root)
        with _guard("log report"):
            if _usable():
                if bundle is not None:
                    name += f"-{bundle.version}"
                    self.client.set_tag(self.run_id, "verticals.bundle_version", bundle.version)
                self.client.update_run(self.run_id, name=name)
        self.log_params({"config": report.get("config") or {}})
        if bundle is not None:
            self.log_params({"model": {"class": bundle.manifest.get("model", {}).get("class"),
                                       "config": bundle.model_config}})
        self.log_metrics(_numbers(report.get("metrics") or {}))
        with _guard("log report file"):
            if _usable():
                self.client.log_artifact(self.run_id, str(path), "report")

    def finish(self, ok: bool) -> None:
        with _guard("end run"), contextlib.redirect_stdout(sys.stderr):
            # mlflow prints the run's URL to stdout; `evaluate` keeps stdout for its JSON
            if _usable():
                self.client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")


def _start(args: argparse.Namespace) -> TrackedRun | None:
    with _guard("start run"):
        client = _client()
        exp = _get_or_create_experiment(client, experiment_name(args.vertical))
        run = client.create_run(exp, run_name=f"{args.command}-{args.vertical}", tags={
            "verticals.command": args.command, "verticals.vertical": args.vertical})
        tracked = TrackedRun(client, run.info.run_id, args.vertical)
        tracked.log_params({k: v for k, v in vars(args).items()
                            if k not in _NOT_PARAMS and not callable(v)})
        return tracked
    return None


@contextlib.contextmanager
def command_run(args: argparse.Namespace) -> Iterator[TrackedRun | None]:
    """The MLflow run of one `train`/`evaluate` command, or None when tracking is off (or MLflow
    failed: warned once). Every Trainer epoch inside the block is logged to it."""
    # under torchrun every rank runs the command; rank 0 alone tracks (RANK: set by torchrun)
    if not _usable() or os.environ.get("RANK", "0") != "0":
        yield None
        return
    run = _start(args)
    if run is None:
        yield None
        return
    from common.train import observe_epochs

    stop = observe_epochs(run.log_epoch)
    ok = False
    try:
        yield run
        ok = True
    finally:
        stop()
        run.finish(ok)


# ---- the model registry and aliases ---------------------------------------------------------
def _version_of(client, vertical: str, bundle_version: str) -> str | None:
    found = client.search_model_versions(
        f"name='{experiment_name(vertical)}' and tags.{BUNDLE_TAG}='{bundle_version}'")
    return min((mv.version for mv in found), key=int, default=None)


def _register(client, vertical: str, bundle_version: str, run_id: str) -> str:
    from mlflow.exceptions import MlflowException

    name = experiment_name(vertical)
    try:
        client.create_registered_model(name, tags={"verticals.vertical": vertical})
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = f"{client.get_run(run_id).info.artifact_uri}/bundle"
    mv = client.create_model_version(name, source, run_id=run_id,
                                     tags={BUNDLE_TAG: bundle_version})
    return mv.version


def _log_at_alias_time(client, root: str | Path | None, vertical: str, version: str) -> str:
    """A bundle MLflow never saw (trained without tracking): log and register it now."""
    from common.aliases import _bundle_dir
    from common.artifacts import load_bundle

    bundle = load_bundle(_bundle_dir(root, vertical, version), vertical=vertical)
    exp = _get_or_create_experiment(client, experiment_name(vertical))
    run = client.create_run(exp, run_name=f"{bundle.name}-{bundle.version}", tags={
        "verticals.command": "alias", "verticals.vertical": vertical})
    tracked = TrackedRun(client, run.info.run_id, vertical)
    tracked.log_bundle(bundle)
    tracked.finish(ok=True)
    found = _version_of(client, vertical, version)
    if found is None:
        raise RuntimeError(f"{vertical} bundle {version} could not be registered")
    return found


def mirror_aliases(root: str | Path | None, vertical: str, state: dict[str, Any]) -> None:
    """Make registered model `verticals-<vertical>`'s aliases equal the store's (`state` is
    aliases.json: current aliases + history). Aliases the store never managed are left alone."""
    if not _usable():
        return
    with _guard("mirror aliases"):
        client = _client()
        current: dict[str, str] = state.get("aliases", {})
        managed = {r.get("alias") for r in state.get("history", [])} | set(current)
        name = experiment_name(vertical)
        versions: dict[str, str] = {}
        for alias, bundle_version in sorted(current.items()):
            if bundle_version not in versions:
                versions[bundle_version] = (_version_of(client, vertical, bundle_version)
                                            or _log_at_alias_time(client, root, vertical,
                                                                  bundle_version))
            client.set_registered_model_alias(name, alias, versions[bundle_version])
        for alias in client.get_registered_model(name).aliases:
            if alias in managed and alias not in current:
                client.delete_registered_model_alias(name, alias)

