"""Decisions from costs or a review budget; the handbook's split and Card Precision@k."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraud_detection.decision import DecisionPolicy
from fraud_detection.protocol import card_precision_at_k, train_test_split


def test_cost_thresholds_are_the_bayes_decision():
    pol = DecisionPolicy.from_costs(missed_fraud=100, review=5, false_block=50)
    assert pol.review_threshold == pytest.approx(0.05)
    assert pol.block_threshold == pytest.approx(0.9)
    p = np.linspace(0, 1, 1001)
    costs = np.stack([p * 100, np.full_like(p, 5.0), (1 - p) * 50], 1)  # allow, review, block
    best = np.array(["allow", "review", "block"])[costs.argmin(1)]
    assert (np.array(pol.decide(p)) == best)[np.abs(p - 0.05) > 1e-9].all()


def test_review_budget_sends_about_the_budget_to_review():
    rng = np.random.default_rng(0)
    probs = rng.beta(0.5, 20, 7000)
    pol = DecisionPolicy.from_review_budget(probs, n_days=7, per_day=30, block_threshold=0.99)
    flagged = sum(d != "allow" for d in pol.decide(probs))
    assert flagged == 210


def test_card_precision_removes_cards_found_on_earlier_days():
    days = np.array([0, 0, 0, 1, 1, 1])
    cust = np.array([1, 2, 3, 1, 2, 3])
    fraud = np.array([1, 0, 0, 1, 0, 1])
    score = np.array([0.9, 0.1, 0.2, 0.9, 0.8, 0.1])
    # day 0: top-2 cards {1, 3} → 1 fraud; day 1: card 1 removed, top-2 {2, 3} → 1 fraud
    assert card_precision_at_k(days, cust, fraud, score, k=2) == pytest.approx(0.5)


def test_split_drops_known_defrauded_customers():
    t = pd.Timestamp("2018-07-25")
    rows = [(t + pd.Timedelta(days=d, hours=1), c, f)
            for d, c, f in [(0, 1, 1), (1, 2, 0), (8, 3, 1), (14, 1, 0), (14, 2, 0), (15, 3, 0),
                            (16, 4, 0)]]
    df = pd.DataFrame(rows, columns=["TX_DATETIME", "CUSTOMER_ID", "TX_FRAUD"])
    sp = train_test_split(df, t)
    assert sp.train.tolist() == [0, 1]
    # customer 1: fraud in training; customer 3: fraud on delay day 8, known from test day 2
    assert df.iloc[sp.test]["CUSTOMER_ID"].tolist() == [2, 3, 4]
