"""Shared metrics, calibration and the report shape against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common.calibration import apply_temperature, fit_temperature
from common.metrics import (
    average_precision_at_k,
    expected_calibration_error,
    hit_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)
from common.reports import build_report


def test_ranking_metrics_by_hand():
    ranked, rel = [5, 1, 9, 2, 7], {1, 2, 3}
    assert precision_at_k(ranked, rel, 5) == pytest.approx(2 / 5)
    assert recall_at_k(ranked, rel, 5) == pytest.approx(2 / 3)
    # hits at ranks 2 and 4: AP@5 = (1/2 + 2/4) / min(5, 3)
    assert average_precision_at_k(ranked, rel, 5) == pytest.approx((0.5 + 0.5) / 3)
    # with k=2 the denominator is min(2, 3) = 2
    assert average_precision_at_k(ranked, rel, 2) == pytest.approx(0.5 / 2)
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(ranked, rel, 5) == pytest.approx(dcg / idcg)
    assert hit_at_k(ranked, rel, 1) == 0.0 and hit_at_k(ranked, rel, 2) == 1.0
    assert ndcg_at_k(ranked, set(), 5) == 0.0


def test_ece_by_hand():
    probs = np.array([0.9, 0.9, 0.2, 0.6])  # P(class 1)
    labels = np.array([1, 0, 0, 1])
    # confidences 0.9, 0.9, 0.8, 0.6; correct 1, 0, 1, 1; 15 equal bins:
    # bin of 0.9: |0.5 - 0.9| * 2/4; bin of 0.8: |1 - 0.8| * 1/4; bin of 0.6: |1 - 0.6| * 1/4
    want = 0.4 * 0.5 + 0.2 * 0.25 + 0.4 * 0.25
    assert expected_calibration_error(probs, labels) == pytest.approx(want)


def test_temperature_scaling_recovers_the_temperature():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, 3)) * 2
    probs = np.exp(true_logits) / np.exp(true_logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(3, p=p) for p in probs])
    t = fit_temperature(true_logits * 3.0, labels)  # logits over-confident by 3x
    assert t == pytest.approx(3.0, rel=0.1)
    cal = apply_temperature(true_logits * 3.0, t)
    assert np.allclose(cal.sum(1), 1.0)
    assert expected_calibration_error(cal, labels) < expected_calibration_error(
        apply_temperature(true_logits * 3.0, 1.0), labels)


def test_report_shape():
    r = build_report("v", "p", "d", [{"auc": 0.8}, {"auc": 0.9}], baselines={"lr": {"auc": 0.7}},
                     per="per_seed")
    assert r["metrics"] == {"auc": pytest.approx(0.85)}
    assert r["metrics_std"] == {"auc": pytest.approx(0.05)}
    assert set(r) >= {"vertical", "protocol", "dataset", "metrics", "metrics_std", "per_seed",
                      "baselines", "config", "bundle", "duration_s", "created_at"}
