"""Fraud requests are judged exactly as the OpenAPI document describes them (findings of the
Schemathesis fuzz, issue 14): no lax coercion of booleans or strings, ids as JSON integers
(5.0 included) within 0..2**53-1, and the suite's one timestamp convention."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from common.serving import create_app
from fraud_detection.predictor import FraudPredictor

TX = {"transaction_id": 92_000_001, "timestamp": "2018-10-01T08:15:00", "customer_id": 3,
      "terminal_id": 17, "amount": 42.5}


def client(root) -> TestClient:
    return TestClient(create_app(predictors={"fraud": FraudPredictor.load("latest", root=root)}))


@pytest.fixture(scope="module")
def c(fraud_root):
    with client(fraud_root) as c:
        yield c


@pytest.mark.parametrize("change, field", [
    ({"amount": False}, "amount"),          # was scored as an amount of 0
    ({"amount": "42.5"}, "amount"),         # was parsed from the string
    ({"timestamp": False}, "timestamp"),    # was the epoch
    ({"timestamp": True}, "timestamp"),
    ({"timestamp": "0110-08-21T17:01:57Z"}, "timestamp"),  # schema allowed it, code refused
    ({"customer_id": True}, "customer_id"),
    ({"transaction_id": 2**53}, "transaction_id"),
    ({"amount": 1e9 + 1}, "amount"),
])
def test_what_the_schema_refuses_is_a_422_naming_the_field(c, change, field):
    r = c.post("/fraud/v1/score", json={**TX, **change})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field
    batch = c.post("/fraud/v1/score:batch", json={"transactions": [TX, {**TX, **change}]})
    assert batch.status_code == 422
    assert batch.json()["error"]["field"] == f"transactions.1.{field}"


@pytest.mark.parametrize("change", [
    {"customer_id": 3.0, "terminal_id": 17.0},   # JSON Schema integers; were refused
    {"transaction_id": 2**53 - 1},               # the documented maximum
    {"timestamp": 1538381700},                   # epoch seconds
    {"timestamp": "2018-10-01T10:15:00+02:00"},
    {"timestamp": "2018-10-01 08:15:00.250Z"},
    {"amount": 1e9},
])
def test_what_the_schema_allows_is_scored(c, change):
    r = c.post("/fraud/v1/score", json={**TX, **change})
    assert r.status_code == 200, r.text


def test_one_instant_in_any_spelling_scores_alike(fraud_root):
    spellings = ["2018-10-01T08:15:00", "2018-10-01T10:15:00+02:00", 1538381700]
    probs = set()
    for ts in spellings:  # a fresh store each time: same history, same features
        with client(fraud_root) as c:
            probs.add(c.post("/fraud/v1/score", json={**TX, "timestamp": ts}).json()["probability"])
    assert len(probs) == 1


def test_the_document_states_the_limits_and_links(c):
    doc = c.get("/openapi.json").json()
    tx = doc["components"]["schemas"]["Transaction"]["properties"]
    assert tx["transaction_id"]["maximum"] == 2**53 - 1 and tx["amount"]["maximum"] == 1e9
    assert {b["type"] for b in tx["timestamp"]["anyOf"]} == {"string", "integer"}
    links = doc["paths"]["/fraud/v1/score"]["post"]["responses"]["200"]["links"]
    assert links["LabelTransaction"]["operationId"] == "fraudLabels"
