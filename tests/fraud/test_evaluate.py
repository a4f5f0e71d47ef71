"""The handbook protocol end to end on a small simulated period (not the reference dates)."""

from __future__ import annotations

import json

import pytest

from common.cli import main
from common.errors import InvalidInput
from fraud_detection.data import SimConfig, simulate


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("fraud-data")
    df = simulate(SimConfig(n_customers=250, n_terminals=500, n_days=80,
                            compromised_terminals_per_day=1, compromised_customers_per_day=1,
                            start_date="2019-01-01"), seed=7)
    df.iloc[: len(df) // 2].to_parquet(d / "part1.parquet")  # a folder of two files
    df.iloc[len(df) // 2 :].to_csv(d / "part2.csv", index=False)
    return d


@pytest.mark.slow
def test_handbook_protocol_report(data_dir, tmp_path):
    out = tmp_path / "report.json"
    rc = main(["evaluate", "fraud", "--protocol", "handbook", "--data", str(data_dir), "--out",
               str(out), "--folds", "2", "--threads", "1"])
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["vertical"] == "fraud" and r["protocol"] == "handbook"
    assert r["config"]["train_start"] == "2019-03-01"  # latest start the data allows
    assert len(r["per_fold"]) == 2 and len(r["selection"]) == 2
    for name in ("roc_auc", "average_precision", "card_precision_at_100"):
        assert 0.0 <= r["metrics"][name] <= 1.0 and name in r["metrics_std"]
    assert {"logistic_regression", "xgboost_handbook_features", "mlp"} <= set(r["baselines"])
    assert r["metrics"]["roc_auc"] > 0.7  # frauds are far from random here
    assert r["diagnostics"]["oracle_roc_auc"] <= 1.0
    assert 0.0 <= r["diagnostics"]["blind_vs_legit_auc"] <= 1.0
    assert {s["features"] for s in r["selection"]} <= {"handbook15", "extended21", "all"}


def test_too_little_history_is_refused(data_dir):
    from argparse import Namespace

    from fraud_detection.evaluate import run

    args = Namespace(protocol="handbook", data=str(data_dir), preset="quick", seeds=None,
                     nets="", columns=None, train_start="2019-01-10", train_days=7,
                     delay_days=7, test_days=7, folds=4, threads=1, bundle=None, root=None)
    with pytest.raises(InvalidInput) as e:
        run(args)
    assert e.value.field == "train_start"
