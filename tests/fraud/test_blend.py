"""The XGBoost + feed-forward blend: weight from validation, served == evaluated, reasons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xgboost as xgb

from fraud_detection.bundle import train_and_publish
from fraud_detection.explain import REASON_CODES
from fraud_detection.features import ALL_FEATURES, compute_features
from fraud_detection.model import (
    BLEND_GRID,
    Blend,
    FeedForward,
    Standardizer,
    choose_blend,
    integrated_gradients,
)
from fraud_detection.predictor import FraudPredictor
from fraud_detection.train import logit, predict_logits
from fraud_detection.vertical import simulated


def test_blend_weight_is_chosen_on_the_validation_rows_it_is_given():
    rng = np.random.default_rng(0)
    y = (rng.random(4000) < 0.05).astype(int)
    signal, noise = y * 2.0 + rng.normal(size=y.size), rng.normal(size=y.size)
    # the validation rows say: trees informative, net pure noise → (nearly) trees alone
    b, aps = choose_blend(signal, noise, y)
    assert b.w >= 0.8 and set(aps) == set(BLEND_GRID) and aps[b.w] == max(aps.values())
    # the same scores with the roles swapped → the mirrored weight
    b2, aps2 = choose_blend(noise, signal, y)
    assert b2.w == pytest.approx(1 - b.w) and aps2[b2.w] == max(aps2.values())
    # two complementary half-informative scores: a real mix wins on validation
    a1, a2 = y * 1.5 + rng.normal(size=y.size), y * 1.5 + rng.normal(size=y.size)
    b, aps = choose_blend(a1, a2, y)
    assert 0.0 < b.w < 1.0 and aps[b.w] > max(aps[0.0], aps[1.0])


def test_integrated_gradients_are_complete_and_batch_independent():
    torch.manual_seed(0)
    net = FeedForward(6, hidden=16).eval()
    z, base = torch.randn(5, 6), torch.zeros(1, 6)
    ig = integrated_gradients(net, z, base, steps=16)
    with torch.no_grad():
        gap = (net(z) - net(base)).double().numpy()
    np.testing.assert_allclose(ig.sum(1), gap, atol=0.02 * (1 + np.abs(gap).max()))
    singles = np.concatenate([integrated_gradients(net, z[i : i + 1], base, 16) for i in range(5)])
    np.testing.assert_allclose(ig, singles, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def blend_setup(tmp_path_factory):
    """A bundle trained on all but the last 3 days with the blend forced on (w = 0.5, so the
    net is shipped whatever the calibration week prefers), and the held-out days."""
    df = simulated("test")
    last = df["TX_DATETIME"].max().normalize() - pd.Timedelta(days=2)
    root = tmp_path_factory.mktemp("fraud-blend")
    bundle = train_and_publish(df[df["TX_DATETIME"] < last].reset_index(drop=True), root,
                               name="blend", xgb_params={"n_estimators": 60}, blend_weight=0.5,
                               net_train_cfg={"epochs": 3})
    return df, last, bundle


def _payloads(df: pd.DataFrame) -> list[dict]:
    return [{"transaction_id": int(r.TRANSACTION_ID), "timestamp": r.TX_DATETIME.isoformat(),
             "customer_id": int(r.CUSTOMER_ID), "terminal_id": int(r.TERMINAL_ID),
             "amount": float(r.TX_AMOUNT)} for r in df.itertuples()]


def test_served_blend_equals_the_evaluation_blend(blend_setup):
    df, last, bundle = blend_setup
    cfg = bundle.read_json("fraud_config.json")
    assert cfg["blend"]["w"] == 0.5 and bundle.manifest["model"]["config"]["model"] == (
        "xgboost+mlp blend")
    new = df["TX_DATETIME"] >= last
    served = FraudPredictor.load(str(bundle.path)).predict(_payloads(df[new]))
    # the evaluation's path: batch features, XGBoost probability → logit, the net's logits
    # (train.predict_logits), model.Blend; models read back from the bundle's own files
    x = compute_features(df)[ALL_FEATURES].to_numpy()[new.to_numpy()]
    booster = xgb.Booster()
    booster.load_model(str(bundle.file("booster.json")))
    p_tree = booster.predict(xgb.DMatrix(x))
    t = bundle.state_dict()
    net = FeedForward(len(ALL_FEATURES), hidden=cfg["net"]["hidden"])
    net.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("net.")})
    want = Blend.from_dict(cfg["blend"]).predict_proba(
        logit(p_tree), predict_logits(net, Standardizer.from_tensors(t), x))
    got = np.array([r["probability"] for r in served])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


def test_blend_reasons_are_named_additive_and_deterministic(blend_setup):
    df, last, bundle = blend_setup
    txs = _payloads(df[df["TX_DATETIME"] >= last].head(40))
    a = FraudPredictor.load(str(bundle.path)).predict(txs)
    b = FraudPredictor.load(str(bundle.path)).predict(txs)
    assert a == b
    codes = set(REASON_CODES.values())
    assert any(r["reasons"] for r in a)
    for r in a:
        assert all(c["code"] in codes and c["contribution"] > 0 for c in r["reasons"])
        cs = [c["contribution"] for c in r["reasons"]]
        assert cs == sorted(cs, reverse=True)
    # additive: the contributions sum to the final log-odds up to one constant (the bias)
    p = FraudPredictor.load(str(bundle.path))
    x = p.features_of([p.decode(p.parse(t)) for t in txs])
    probs, contribs = p.scorer.score(x)
    gap = logit(probs) - contribs.sum(1)
    assert np.ptp(gap) < 0.05, np.ptp(gap)


def test_blend_batch_of_n_equals_n_singles(blend_setup):
    df, last, bundle = blend_setup
    txs = _payloads(df[df["TX_DATETIME"] >= last].head(12))
    batch = FraudPredictor.load(str(bundle.path)).predict(txs)
    one = FraudPredictor.load(str(bundle.path))
    singles = [one.predict([t])[0] for t in txs]
    for s, bt in zip(singles, batch, strict=True):
        assert s["decision"] == bt["decision"]
        assert [c["code"] for c in s["reasons"]] == [c["code"] for c in bt["reasons"]]
        assert s["probability"] == pytest.approx(bt["probability"], rel=1e-5, abs=1e-9)
