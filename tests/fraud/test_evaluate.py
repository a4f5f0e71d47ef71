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
def test_handbook_protocol_report(data_dir, tmp_path, monkeypatch):
    import fraud_detection.evaluate as ev
    from fraud_detection.model import BLEND_GRID

    net_calls, blend_calls = [], []
    real_net, real_blend = ev._net_logits, ev.choose_blend

    def spy_net(net, df, X, y, tr, early, te, seeds):
        net_calls.append(df["TX_DATETIME"].iloc[te])
        return real_net(net, df, X, y, tr, early, te, seeds)

    def spy_blend(z_tree, z_net, y):
        blend_calls.append(len(y))
        return real_blend(z_tree, z_net, y)

    monkeypatch.setattr(ev, "_net_logits", spy_net)
    monkeypatch.setattr(ev, "choose_blend", spy_blend)
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
    loss = r["diagnostics"]["mean_auc_loss_by_group"]
    assert set(loss) == {"scenario_1", "scenario_2_visible", "scenario_2_blind", "scenario_3"}
    assert {s["features"] for s in r["selection"]} <= {"handbook15", "extended21", "all"}
    # the blend: its weight per fold comes from the validation split, never the test rows
    assert {"xgboost_selected", "blend_xgb_mlp"} <= set(r["baselines"])
    assert len(blend_calls) == 2 and len(net_calls) == 4  # per fold: test net, validation net
    for f, s in enumerate(r["selection"]):
        test_t, val_t = net_calls[2 * f], net_calls[2 * f + 1]
        assert blend_calls[f] == len(val_t) and val_t.max() < test_t.min()
        assert s["blend_w"] in BLEND_GRID and s["val_ap_blend"] >= s["val_ap_xgb"]
    choice = r["blend_choice"]
    use_blend = choice["mean_val_ap_blend"] > choice["mean_val_ap_xgboost"]
    assert choice["model"] == ("blend" if use_blend else "xgboost")
    ours = r["baselines"]["blend_xgb_mlp" if use_blend else "xgboost_selected"]
    assert r["metrics"]["average_precision"] == pytest.approx(ours["average_precision"])


def test_too_little_history_is_refused(data_dir):
    from argparse import Namespace

    from fraud_detection.evaluate import run

    args = Namespace(protocol="handbook", data=str(data_dir), preset="quick", seeds=None,
                     nets="", columns=None, train_start="2019-01-10", train_days=7,
                     delay_days=7, test_days=7, folds=4, threads=1, bundle=None, root=None)
    with pytest.raises(InvalidInput) as e:
        run(args)
    assert e.value.field == "train_start"


def test_auc_loss_by_group_splits_one_minus_auc_exactly():
    import numpy as np

    from common import metrics as M
    from fraud_detection.evaluate import auc_loss_by_group

    rng = np.random.default_rng(3)
    group = rng.choice(4, size=3000, p=[0.9, 0.04, 0.03, 0.03])  # 0: negatives
    scores = np.round(rng.normal(size=3000) + 0.8 * group, 1)  # rounding makes ties
    groups = {f"g{k}": group == k for k in (1, 2, 3)}
    out = auc_loss_by_group(groups, group == 0, scores)
    total = M.roc_auc((group > 0).astype(int), scores)
    assert sum(g["auc_loss"] for g in out.values()) == pytest.approx(1 - total, abs=3e-5)
    assert out["g3"]["auc"] > out["g1"]["auc"]  # a larger shift ranks better
    assert [out[f"g{k}"]["n"] for k in (1, 2, 3)] == [int((group == k).sum()) for k in (1, 2, 3)]
    empty = auc_loss_by_group({"none": group == 9}, group == 0, scores)
    assert empty["none"] == {"n": 0, "auc": None, "auc_loss": 0.0}
