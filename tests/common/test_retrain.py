"""`verticals retrain`: a candidate from logged inputs joined with their delayed labels, set as
the `candidate` alias, gated against production on the most recent labelled rows.

The log is written the way the server writes it: the fraud predictor scores two simulated
weeks after its training data (the same customers and terminals), `monitor_record` gives each
row, PredictionLog stores them, FeedbackStore the labels."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from common.aliases import get_aliases, set_alias
from common.cli import main
from common.monitoring.feedback import FeedbackStore
from common.monitoring.predlog import PredictionLog
from common.registry import get_vertical

T0 = 1_790_000_000.0
DAYS = 14


def replay_into_log(bundle_path, log_dir, days: int = DAYS) -> int:
    from fraud_detection.data import SimConfig, simulate
    from fraud_detection.predictor import FraudPredictor
    from fraud_detection.schemas import Transaction
    from fraud_detection.vertical import _END, PRESETS

    p = {**PRESETS["test"], "n_days": PRESETS["test"]["n_days"] + days}
    start = (_END - pd.Timedelta(days=PRESETS["test"]["n_days"])).strftime("%Y-%m-%d")
    df = simulate(SimConfig(**p, start_date=start), seed=0)
    df = df[df["TX_DATETIME"] >= _END].reset_index(drop=True)
    pred = FraudPredictor.load(bundle_path)
    plog = PredictionLog(log_dir, "fraud", start=False)
    for s in range(0, len(df), 512):
        part = df.iloc[s : s + 512]
        reqs = [Transaction(transaction_id=int(r.TRANSACTION_ID) + 10**8,
                            timestamp=r.TX_DATETIME.isoformat(), customer_id=int(r.CUSTOMER_ID),
                            terminal_id=int(r.TERMINAL_ID), amount=float(r.TX_AMOUNT))
                for r in part.itertuples()]
        outs = pred.predict_batch([pred.decode(r) for r in reqs])
        plog.append([(f"req-{r.transaction_id}", T0 + s + k, pred.bundle.version,
                      pred.monitor_record(r, o, pred.encode(o)))
                     for k, (r, o) in enumerate(zip(reqs, outs, strict=True))])
    plog.flush()
    FeedbackStore(plog).record("fraud", [
        {"id": str(int(t) + 10**8), "label": bool(y)}
        for t, y in zip(df["TRANSACTION_ID"], df["TX_FRAUD"], strict=True)])
    return len(df)


@pytest.fixture(scope="module")
def fraud_log(tmp_path_factory):
    root, log_dir = tmp_path_factory.mktemp("store"), tmp_path_factory.mktemp("log")
    bundle = get_vertical("fraud").train_default(root, preset="test")
    set_alias(root, "fraud", bundle.version, "production")
    n = replay_into_log(bundle.path, log_dir)
    return {"root": root, "log": log_dir, "production": bundle.version, "n": n}


@pytest.mark.slow
def test_retrain_sets_the_candidate_and_the_gate_promotes(fraud_log, capsys):
    root, log = str(fraud_log["root"]), str(fraud_log["log"])
    assert main(["retrain", "fraud", "--log", log, "--root", root]) == 0
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{"):])
    aliases = get_aliases(root, "fraud")
    assert aliases["candidate"] == result["candidate"] != fraud_log["production"]
    assert aliases["production"] == fraud_log["production"] and not result["promoted"]
    assert result["train_rows"] + result["holdout_rows"] == fraud_log["n"]
    assert result["metrics"]["calib_average_precision"] > 0.3  # it learned from the log

    from common.artifacts import load_bundle

    cand = load_bundle(fraud_log["root"] / "fraud" / result["candidate"], vertical="fraud")
    assert cand.read_json("fraud_config.json")["retrained_from"] == fraud_log["production"]
    assert (cand.path / "monitoring_profile.json").is_file()  # monitored like any bundle

    # the gate: both scored on the held-out rows; a generous margin lets the candidate pass
    assert main(["retrain", "fraud", "--log", log, "--root", root, "--gate",
                 "--margin", "1"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{"):])
    lines = [ln for ln in out.splitlines() if ln.startswith(("production ", "candidate "))]
    assert [ln.split()[0] for ln in lines] == ["production", "candidate"]
    assert all("average_precision=" in ln for ln in lines)
    assert result["promoted"]
    assert get_aliases(root, "fraud")["production"] == result["candidate"]


@pytest.mark.slow
def test_too_few_labels_is_one_line(fraud_log, tmp_path, capsys):
    code = main(["retrain", "fraud", "--log", str(fraud_log["log"]), "--root",
                 str(fraud_log["root"]), "--since", "2030-01-01"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "needs at least" in err


def test_unsupported_vertical_and_missing_log(tmp_path, toy_root, capsys):
    code = main(["retrain", "toy", "--log", str(tmp_path), "--root", str(toy_root)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "error: vertical: toy: retraining from the prediction log " \
                                "is not supported yet"
    fraud_root = tmp_path / "store"
    (fraud_root / "fraud").mkdir(parents=True)
    code = main(["retrain", "fraud", "--log", str(tmp_path / "nope"), "--root", str(fraud_root)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "does not exist" in err and "\n" not in err


def test_holdout_must_be_a_share(tmp_path, capsys):
    from common.monitoring.retrain import split_holdout

    rows = pd.DataFrame({"x": range(10)})
    train, held = split_holdout(rows, 0.25)
    assert list(held["x"]) == [7, 8, 9] and list(train["x"]) == list(range(7))
    with pytest.raises(Exception, match="between 0 and 1"):
        split_holdout(rows, 1.0)
