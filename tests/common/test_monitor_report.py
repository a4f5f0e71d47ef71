"""`verticals monitor`: the offline report from a small generated prediction log (toy vertical,
a hand-built reference profile): drift found where the log shifts and not before, estimated and
realised performance per version, a self-contained HTML page, and one-line errors."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from common.artifacts import BundleWriter
from common.cli import main
from common.monitoring.feedback import FeedbackStore
from common.monitoring.predlog import PredictionLog
from common.monitoring.profile import PROFILE_FILE, build_profile, categorical_ref, numeric_ref
from common.monitoring.report import build_report, render_html

WINDOW = 200
T0 = 1_790_000_000.0  # a fixed clock: 2026-09-21


def _bundle(root, profile=None):
    w = BundleWriter(root, "toy", "toy-monitored" if profile else "toy-old")
    if profile is not None:
        w.add_json(PROFILE_FILE, profile)
    return w.publish("tests.common.toy_vertical.make_net").version


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A bundle store with a profiled and an unprofiled version, and a log of 800 rows of the
    first (the last 400 with input `a` shifted by 1.5 sd) plus 60 of the second; labels for
    every other row of the first."""
    rng = np.random.default_rng(0)
    root, log_dir = tmp_path_factory.mktemp("bundles"), tmp_path_factory.mktemp("log")
    ref_p = rng.beta(2, 5, 4000)
    profile = build_profile(
        {"a": numeric_ref(rng.normal(0, 1, 4000)),
         "c": categorical_ref(rng.choice(["x", "y", "z"], 4000, p=[0.5, 0.3, 0.2]))},
        task="binary", score=numeric_ref(ref_p),
        metrics={"accuracy": float(np.where(ref_p >= 0.5, ref_p, 1 - ref_p).mean()),
                 "roc_auc": 0.8}, classes=["0", "1"])
    v_new, v_old = _bundle(root, profile), _bundle(root)
    plog = PredictionLog(log_dir, "toy", start=False)
    rows, labels = [], []
    for i in range(800):
        p = float(rng.beta(2, 5))
        a = float(rng.normal(1.5 if i >= 400 else 0.0, 1))
        c = str(rng.choice(["x", "y", "z"], p=[0.5, 0.3, 0.2]))
        rows.append((f"r{i}", T0 + i, v_new, {"id": f"t{i}", "features": {"a": a, "c": c},
                                               "score": p, "prediction": str(int(p >= 0.5))}))
        if i % 2 == 0:
            labels.append({"id": f"t{i}", "label": bool(rng.uniform() < p)})
    for i in range(60):
        rows.append((f"o{i}", T0 + 900 + i, v_old, {"id": f"o{i}", "features": {"a": 0.0},
                                                     "score": 0.1, "prediction": "0"}))
    plog.append(rows)
    plog.flush()
    FeedbackStore(plog).record("toy", labels)
    return {"root": root, "log": log_dir, "new": v_new, "old": v_old}


@pytest.fixture(scope="module")
def report(logged):
    return build_report("toy", logged["log"], bundles=logged["root"], window=WINDOW, ert=500)


def test_drift_appears_where_the_log_shifts(report, logged):
    v = report["versions"][logged["new"]]
    assert v["monitored"] and len(v["windows"]) == 4 and v["window_size"] == WINDOW
    flags = [w["drift"]["a"]["drift"] for w in v["windows"]]
    assert flags == [False, False, True, True]
    assert not any(w["drift"]["c"]["drift"] for w in v["windows"])
    assert not any(w["drift"]["score"]["drift"] for w in v["windows"])
    assert v["drift_windows"] == 2


def test_estimated_and_realised_per_version(report, logged):
    v = report["versions"][logged["new"]]
    assert report["rows"] == 860 and report["labelled"] == 400
    assert v["realised"]["n_labels"] == 400
    assert abs(v["estimated"]["accuracy"] - v["reference"]["accuracy"]) < 0.03
    assert 0.0 <= v["realised"]["accuracy"] <= 1.0 and "roc_auc" in v["realised"]
    assert all(w["realised"]["n_labels"] == WINDOW / 2 for w in v["windows"])
    s = v["score"]
    assert len(s["observed"]) == len(s["edges"]) + 1 and abs(sum(s["observed"]) - 1) < 1e-9


def test_a_version_without_profile_says_why(report, logged):
    old = report["versions"][logged["old"]]
    assert old == {"rows": 60, "monitored": False,
                   "reason": f"bundle toy-old/{logged['old']} has no reference profile "
                             "(trained before monitoring)"}


def test_html_is_self_contained(report):
    page = render_html(report)
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") >= 3
    assert "<script" not in page and "src=" not in page and "<link" not in page
    # the only URL is the SVG namespace (an identifier, never fetched)
    assert set(re.findall(r"https?://[^\"' ]+", page)) == {"http://www.w3.org/2000/svg"}


def test_cli_writes_html_and_json(logged, tmp_path, capsys):
    args = ["monitor", "toy", "--log", str(logged["log"]), "--bundles", str(logged["root"]),
            "--window", str(WINDOW)]
    assert main([*args, "--out", str(tmp_path / "r.json")]) == 0
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["versions"][logged["new"]]["drift_windows"] == 2
    assert json.loads(capsys.readouterr().out)["rows"] == 860
    # T0 + 400 s: --since drops the 400 in-distribution rows, every window drifts
    assert main([*args, "--out", str(tmp_path / "r.html"), "--since",
                 "2026-09-21T14:20:00"]) == 0
    assert (tmp_path / "r.html").read_text().count("<svg") >= 3
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 460
    assert summary["versions"][logged["new"]] == {"windows": 2, "drift_windows": 2}


@pytest.mark.parametrize("case", ["missing", "empty", "vertical", "suffix", "since"])
def test_bad_input_exits_2_with_one_line(case, logged, tmp_path, capsys):
    log, out, vertical, extra = str(logged["log"]), str(tmp_path / "r.html"), "toy", []
    if case == "missing":
        log = str(tmp_path / "nope")
    elif case == "empty":
        log = str(tmp_path)
    elif case == "vertical":
        vertical = "nope"
    elif case == "suffix":
        out = str(tmp_path / "r.pdf")
    else:
        extra = ["--since", "yesterday"]
    code = main(["monitor", vertical, "--log", log, "--bundles", str(logged["root"]),
                 "--out", out, *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err
    assert {"missing": "does not exist", "empty": "no prediction log", "vertical": "nope",
            "suffix": ".html or .json", "since": "ISO 8601"}[case] in err
