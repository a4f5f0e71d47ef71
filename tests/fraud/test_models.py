"""Neural models through the shared Trainer, sequences, calibration, and the trees' reasons."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from common import metrics as M
from fraud_detection.explain import REASON_CODES, top_reasons, tree_contributions
from fraud_detection.features import ALL_FEATURES, compute_features
from fraud_detection.model import PlattCalibrator
from fraud_detection.protocol import day_index
from fraud_detection.train import fit_gru, fit_mlp, fit_xgb, logit, predict_logits, sequence_index


def test_sequence_index_lists_each_cards_previous_rows():
    cust = np.array([5, 7, 5, 5, 7, 5])
    idx = sequence_index(cust, k=3)
    assert idx[0].tolist() == [-1, -1, 0]
    assert idx[3].tolist() == [0, 2, 3]
    assert idx[4].tolist() == [-1, 1, 4]
    assert idx[5].tolist() == [2, 3, 5]


def _split(df):
    x = compute_features(df).to_numpy()
    y = df["TX_FRAUD"].to_numpy()
    d = day_index(df) - day_index(df).min()
    return x, y, np.flatnonzero(d < 30), np.flatnonzero((d >= 30) & (d < 38)), \
        np.flatnonzero(d >= 38)


def test_every_feature_has_a_stable_reason_code():
    assert set(REASON_CODES) == set(ALL_FEATURES)
    assert len(set(REASON_CODES.values())) == len(REASON_CODES)


def test_tree_reasons_sum_to_the_margin(small_df):
    x, y, tr, va, te = _split(small_df)
    m = fit_xgb(x[tr], y[tr], {"n_estimators": 30})
    contrib = tree_contributions(m.get_booster(), x[te])
    bias = m.get_booster().predict(xgb.DMatrix(x[te[:1]]), pred_contribs=True)[0, -1]
    np.testing.assert_allclose(contrib.sum(1) + bias, m.predict(x[te], output_margin=True),
                               rtol=1e-4, atol=1e-4)
    reasons = top_reasons(contrib, x[te], ALL_FEATURES, k=3)
    assert all(len(r) <= 3 and all(c["contribution"] > 0 for c in r) for r in reasons)


def test_platt_calibration_lowers_calibration_error(small_df):
    x, y, tr, va, te = _split(small_df)
    m = fit_xgb(x[tr], y[tr], {"n_estimators": 40, "scale_pos_weight": 20})  # skewed on purpose
    raw = m.predict_proba(x[te])[:, 1]
    cal = PlattCalibrator().fit(m.predict(x[va], output_margin=True), y[va])
    fixed = cal.predict_proba(m.predict(x[te], output_margin=True))
    assert M.expected_calibration_error(fixed, y[te]) < M.expected_calibration_error(raw, y[te])
    np.testing.assert_allclose(logit(raw), m.predict(x[te], output_margin=True), atol=1e-4)


@pytest.mark.slow
def test_feed_forward_and_gru_learn_through_the_trainer(small_df):
    x, y, tr, va, te = _split(small_df)
    cfg = {"epochs": 4, "batch_size": 256}
    net, sc = fit_mlp(x[tr], y[tr], x[va], y[va], train_cfg=cfg)
    ap_mlp = M.average_precision(y[te], predict_logits(net, sc, x[te]))
    idx = sequence_index(small_df["CUSTOMER_ID"].to_numpy(), k=5)
    gru, sc2 = fit_gru(x, idx, tr, y[tr], va, y[va], train_cfg=cfg)
    ap_gru = M.average_precision(y[te], predict_logits(gru, sc2, x, idx[te]))
    base = y[te].mean()
    assert ap_mlp > 3 * base and ap_gru > 3 * base, (ap_mlp, ap_gru, base)
