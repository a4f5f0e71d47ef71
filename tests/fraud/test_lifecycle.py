"""Fraud under the model lifecycle: a swap keeps the live feature store, a shadow candidate
never records a transaction a second time, and a canary shares production's store."""

from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient

from common.aliases import set_alias, set_rollout
from common.serving.app import create_app
from common.serving.prom import render
from fraud_detection.bundle import train_and_publish
from fraud_detection.predictor import FraudPredictor
from fraud_detection.vertical import PRESETS, simulated

pytestmark = pytest.mark.slow  # trains two fraud bundles


@pytest.fixture(scope="module")
def two_bundles(tmp_path_factory):
    """Production and a candidate trained on the same data with another model seed."""
    root = tmp_path_factory.mktemp("fraud-lifecycle")
    df = simulated("test")
    xgb = {"n_estimators": 40}
    prod = train_and_publish(df, root, xgb_params=xgb, seed=0).version
    cand = train_and_publish(df, root, xgb_params=xgb, seed=1).version
    assert PRESETS["test"]["n_days"] > 7
    return root, prod, cand


def _transactions(n: int = 60) -> list[dict]:
    """A day after the training data; few cards and terminals, so histories matter."""
    return [{"transaction_id": 70_000_000 + i, "timestamp": f"2018-10-01T{8 + i // 10:02d}:"
             f"{(i * 7) % 60:02d}:00", "customer_id": i % 4, "terminal_id": 10 + i % 3,
             "amount": 20.0 + 17 * (i % 9)} for i in range(n)]


def _store_copy(src, dst, prod, cand):
    shutil.copytree(src, dst)
    set_alias(dst, "fraud", prod, "production")
    set_alias(dst, "fraud", cand, "candidate")
    return dst


def _score_all(client, txs) -> list[dict]:
    out = []
    for t in txs:
        r = client.post("/fraud/v1/score", json=t)
        assert r.status_code == 200, r.text
        out.append(r.json())
    return out


def test_swap_keeps_the_live_feature_store(two_bundles, tmp_path):
    src, prod, cand = two_bundles
    root = _store_copy(src, tmp_path / "s", prod, cand)
    txs = _transactions()
    app = create_app(["fraud"], root=root, alias_poll_s=0)
    with TestClient(app) as client:
        _score_all(client, txs[:40])
        store = app.state.served["fraud"].predictor.store
        set_alias(root, "fraud", cand, "production")
        assert client.portal.call(app.state.follower.check_once) == ["fraud"]
        swapped = app.state.served["fraud"].predictor
        assert swapped.bundle.version == cand and swapped.store is store
        after = _score_all(client, txs[40:])
    # reference: the candidate bundle that saw every transaction itself
    ref = FraudPredictor.load(root / "fraud" / cand)
    ref.predict(txs[:40])
    assert ref.predict(txs[40:]) == after


def test_shadow_never_records_twice_and_never_changes_an_answer(two_bundles, tmp_path,
                                                               monkeypatch):
    monkeypatch.setenv("VERTICALS_SHADOW_CPU_SHARE", "1.0")  # compare every request here
    src, prod, cand = two_bundles
    txs = _transactions()
    plain_root = _store_copy(src, tmp_path / "plain", prod, cand)
    shadow_root = _store_copy(src, tmp_path / "shadow", prod, cand)
    set_rollout(shadow_root, "fraud", shadow=1.0)
    answers, snapshots = {}, {}
    for name, root in (("plain", plain_root), ("shadow", shadow_root)):
        app = create_app(["fraud"], root=root, alias_poll_s=0)
        with TestClient(app) as client:
            client.portal.call(app.state.follower.check_once)
            assert ("fraud" in app.state.follower.rollouts) == (name == "shadow")
            answers[name] = _score_all(client, txs)
            if name == "shadow":
                shadow = app.state.follower.rollouts["fraud"].shadow
                assert shadow.drain(30)  # let it finish
                cand_store = app.state.follower.rollouts["fraud"].candidate.predictor.store
            snapshots[name] = app.state.served["fraud"].predictor.store.snapshot()
    assert answers["shadow"] == answers["plain"]
    assert snapshots["shadow"].equals(snapshots["plain"])  # each transaction recorded once
    assert cand_store is not None
    text = render()[0].decode()
    compared = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("verticals_shadow_compared_total{")
                   and f'candidate="{cand}"' in line and 'model="fraud"' in line)
    assert compared == len(txs)


def test_canary_shares_production_store(two_bundles, tmp_path):
    src, prod, cand = two_bundles
    root = _store_copy(src, tmp_path / "c", prod, cand)
    set_rollout(root, "fraud", canary=0.5)
    app = create_app(["fraud"], root=root, alias_poll_s=0)
    with TestClient(app) as client:
        client.portal.call(app.state.follower.check_once)
        rollout = app.state.follower.rollouts["fraud"]
        assert rollout.candidate.predictor.store is app.state.served["fraud"].predictor.store
        out = _score_all(client, _transactions(40))
    by_customer: dict[int, set[str]] = {}
    for t, a in zip(_transactions(40), out, strict=True):
        by_customer.setdefault(t["customer_id"], set()).add(a["model_version"])
    assert all(len(v) == 1 for v in by_customer.values())  # sticky per card holder
