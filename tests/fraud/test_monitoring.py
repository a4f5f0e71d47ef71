"""Monitoring parts of fraud: the bundle's reference profile, the served record, and labels
forwarded as monitoring feedback."""

from __future__ import annotations

import math

import numpy as np
from fastapi.testclient import TestClient

from common.artifacts import load_bundle
from common.monitoring.profile import load_profile
from common.serving import create_app
from fraud_detection.features import ALL_FEATURES
from fraud_detection.monitoring import HOUR, feature_columns
from fraud_detection.predictor import FraudPredictor

TX = {"transaction_id": 93_000_001, "timestamp": "2018-10-01T08:15:00", "customer_id": 3,
      "terminal_id": 17, "amount": 42.5}


def test_the_bundle_carries_a_profile_of_every_feature_the_hour_and_p_fraud(fraud_root):
    profile, why = load_profile(load_bundle("latest", vertical="fraud", root=fraud_root))
    assert why is None and profile["task"] == "binary"
    assert set(profile["features"]) == {*ALL_FEATURES, HOUR}
    assert all(r["kind"] == "numeric" for r in profile["features"].values())
    assert profile["score_name"] == "probability" and profile["score"]["kind"] == "numeric"
    assert 0.5 < profile["metrics"]["roc_auc"] <= 1.0
    assert {"average_precision", "ece", "accuracy"} <= set(profile["metrics"])
    hours = profile["features"][HOUR]
    assert 0 <= hours["mean"] <= 23


def test_hour_is_the_utc_hour_of_day():
    x = np.zeros((2, 1))
    cols = feature_columns(x, ["TX_AMOUNT"], np.array([8 * 3600 + 59, 86_400 + 23 * 3600]))
    assert cols[HOUR].tolist() == [8.0, 23.0]


def test_monitor_record_of_a_served_answer_matches_the_profile(fraud_root):
    p = FraudPredictor.load("latest", root=fraud_root)
    profile, _ = load_profile(p.bundle)
    seen: list[dict] = []

    def hook(pred, requests, where, outputs, results):
        seen.extend(pred.monitor_record(requests[i], outputs[j], results[i])
                    for j, i in enumerate(where))

    txs = [dict(TX, transaction_id=93_000_001 + i, amount=5.0 + 40 * i) for i in range(3)]
    results = p.run_each([p.parse(t) for t in txs], monitor=hook)
    assert len(seen) == 3
    for rec, res, tx in zip(seen, results, txs, strict=True):
        assert set(rec["features"]) == set(profile["features"])
        assert all(isinstance(v, float) and math.isfinite(v) for v in rec["features"].values())
        assert rec["features"]["TX_AMOUNT"] == tx["amount"] and rec["features"][HOUR] == 8.0
        assert rec["id"] == str(tx["transaction_id"]) and rec["score"] == res.probability
        assert rec["prediction"] == res.decision
    assert "_x" not in results[0].model_dump()  # the feature row never reaches the answer


def test_labels_also_count_as_monitoring_feedback(fraud_root, tmp_path):
    app = create_app(predictors={"fraud": FraudPredictor.load("latest", root=fraud_root)},
                     log_dir=tmp_path)
    with TestClient(app) as c:
        assert c.post("/fraud/v1/score", json=TX).status_code == 200
        r = c.post("/fraud/v1/labels", json={"labels": [
            {"transaction_id": TX["transaction_id"], "fraud": True},
            {"transaction_id": 93_999_999, "fraud": False}]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["updated"] == 1 and body["unknown"] == [93_999_999]  # unchanged fields
        assert body["feedback"] == {"accepted": 1, "unknown": 1, "unknown_ids": ["93999999"]}
        bad = c.post("/fraud/v1/labels", json={"labels": [
            {"transaction_id": TX["transaction_id"], "fraud": "yes"}]})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "labels.0.fraud"
