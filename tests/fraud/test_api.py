"""REST routes, validation errors, late labels, the batch job, and Redis-backed replicas."""

from __future__ import annotations

import uuid

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from common.batch import score_file
from common.registry import get_vertical
from common.serving import create_app
from fraud_detection.data import SimConfig, simulate
from fraud_detection.predictor import FraudPredictor

TX = {"transaction_id": 91_000_001, "timestamp": "2018-10-01T08:15:00", "customer_id": 3,
      "terminal_id": 17, "amount": 42.5}


def fresh(root, **opts) -> FraudPredictor:
    return FraudPredictor.load("latest", root=root, **opts)


def client_for(predictor) -> TestClient:
    return TestClient(create_app(predictors={"fraud": predictor}))


def test_score_single_and_batch_match_the_library(fraud_root):
    txs = [dict(TX, transaction_id=91_000_001 + i, amount=10.0 + 50 * i) for i in range(4)]
    want = fresh(fraud_root).predict(txs)
    with client_for(fresh(fraud_root)) as c:
        got = c.post("/fraud/v1/score:batch", json={"transactions": txs})
        assert got.status_code == 200, got.text
        assert got.json()["results"] == want
    with client_for(fresh(fraud_root)) as c:
        singles = [c.post("/fraud/v1/score", json=t).json() for t in txs]
    assert singles == want
    for r in want:
        assert 0.0 <= r["probability"] <= 1.0 and r["decision"] in ("allow", "review", "block")
        assert r["model_version"] and all(x["contribution"] > 0 for x in r["reasons"])


@pytest.mark.parametrize(
    "change, field",
    [
        ({"amount": -1.0}, "amount"),
        ({"amount": None}, "amount"),
        ({"amount": "lots"}, "amount"),
        ({"foo": 1}, "foo"),
        ({"timestamp": "2018-13-45T99:00"}, "timestamp"),
        ({"customer_id": "abc"}, "customer_id"),
        ({"terminal_id": 1.5}, "terminal_id"),
        ({"transaction_id": "7"}, "transaction_id"),
    ],
)
def test_bad_input_is_422_naming_the_field(fraud_root, change, field):
    tx = {k: v for k, v in {**TX, **change}.items() if v is not None}
    with client_for(fresh(fraud_root)) as c:
        r = c.post("/fraud/v1/score", json=tx)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["field"] == field
        r = c.post("/fraud/v1/score:batch", json={"transactions": [TX, tx]})
        assert r.status_code == 422
        assert r.json()["error"]["field"] == f"transactions.1.{field}"


def test_batch_size_limit(fraud_root):
    with client_for(fresh(fraud_root)) as c:
        r = c.post("/fraud/v1/score:batch", json={"transactions": [TX] * 1001})
        assert r.status_code == 422 and r.json()["error"]["field"] == "transactions"


def test_late_labels_update_terminal_risk(fraud_root):
    """A fraud label posted for a transaction at a fresh terminal raises the terminal's risk
    for transactions more than the label delay later."""
    term, t0 = 7_777_777, pd.Timestamp("2018-10-02T12:00:00")
    first = dict(TX, transaction_id=92_000_001, terminal_id=term, customer_id=4_000_001,
                 timestamp=t0.isoformat())
    later = dict(TX, transaction_id=92_000_002, terminal_id=term, customer_id=4_000_002,
                 timestamp=(t0 + pd.Timedelta(days=8)).isoformat())
    answers = {}
    for labelled in (False, True):
        p = fresh(fraud_root)
        with client_for(p) as c:
            assert c.post("/fraud/v1/score", json=first).status_code == 200
            if labelled:
                r = c.post("/fraud/v1/labels", json={"labels": [
                    {"transaction_id": 92_000_001, "fraud": True},
                    {"transaction_id": 5, "fraud": False}]})
                body = r.json()  # (+ "feedback": the monitoring view, tests/fraud/test_monitoring)
                assert (body["updated"], body["unknown"]) == (1, [5])
            answers[labelled] = c.post("/fraud/v1/score", json=later).json()
    assert answers[True]["probability"] > answers[False]["probability"]
    codes = {r["code"] for r in answers[True]["reasons"]}
    assert codes & {"TERMINAL_FRAUD_RATE_1D", "TERMINAL_FRAUD_RATE_7D", "TERMINAL_FRAUD_RATE_30D",
                    "TERMINAL_FRAUD_COUNT_7D", "TERMINAL_FRAUD_COUNT_30D",
                    "TERMINAL_RECENT_FRAUDS", "TERMINAL_FRAUD_AGE_DAYS", "TERMINAL_FRAUD_DAYS_30D",
                    "TERMINAL_FRAUD_STREAK", "TERMINAL_FRAUD_AVG_AMOUNT"}


@pytest.mark.slow
def test_batch_job_equals_api_replay_in_time_order(fraud_root, tmp_path):
    day = simulate(SimConfig(n_customers=150, n_terminals=600, n_days=1,
                             start_date="2018-10-01"), seed=11)
    day["TRANSACTION_ID"] += 95_000_000
    shuffled = day.sample(frac=1.0, random_state=0)  # the job must sort by time itself
    src = tmp_path / "day.parquet"
    shuffled.to_parquet(src)
    s = score_file("fraud", src, tmp_path / "scores.parquet", root=fraud_root, chunk_size=100)
    assert (s["read"], s["scored"], s["rejected"]) == (len(day), len(day), 0)
    out = pd.read_parquet(tmp_path / "scores.parquet").sort_values("row")
    v = get_vertical("fraud")
    with client_for(fresh(fraud_root)) as c:
        api = {}
        for row in day.to_dict("records"):  # already in (time, id) order
            r = c.post("/fraud/v1/score", json=v.row_to_payload(row, None)).json()
            api[r["transaction_id"]] = r
    assert out["transaction_id"].tolist() == shuffled["TRANSACTION_ID"].tolist()
    for rec in out.to_dict("records"):
        want = api[rec["transaction_id"]]
        assert rec["probability"] == want["probability"] and rec["decision"] == want["decision"]


@pytest.mark.slow
def test_redis_replicas_share_state(fraud_root, redis_url):
    """Two replicas on one Redis namespace answer as one in-process predictor."""
    ns = f"test-{uuid.uuid4().hex}"
    a = fresh(fraud_root, store="redis", redis_url=redis_url, redis_namespace=ns)
    b = fresh(fraud_root, store="redis", redis_url=redis_url, redis_namespace=ns)
    try:
        txs = [dict(TX, transaction_id=93_000_000 + i, amount=20.0 + 30 * i,
                    timestamp=f"2018-10-01T{8 + i:02d}:00:00") for i in range(4)]
        want = fresh(fraud_root).predict(txs)
        got = [(a if i % 2 == 0 else b).predict([t])[0] for i, t in enumerate(txs)]
        assert got == want
    finally:
        a.store.clear()
