"""Monitoring statistics: reference profiles, calibrated drift thresholds, CBPE estimates."""

from __future__ import annotations

import numpy as np
import pytest

from common.monitoring.drift import alpha_for, calibrate, window_stats
from common.monitoring.estimate import estimated, expected_auc, realised
from common.monitoring.profile import (
    build_profile,
    categorical_ref,
    embedding_ref,
    load_profile,
    numeric_ref,
)

CATS, CAT_P = list("abcde"), [0.4, 0.3, 0.15, 0.1, 0.05]


def draw(rng, n, shift=0.0):
    return {"num": list(rng.normal(shift, 1, n)), "cat": list(rng.choice(CATS, p=CAT_P, size=n)),
            "emb": list(rng.normal(0, 1, (n, 8))), "score": list(rng.beta(2, 5, n))}


@pytest.fixture(scope="module")
def profile():
    rng = np.random.default_rng(0)
    ref = draw(rng, 5000)
    return build_profile({"num": numeric_ref(ref["num"]), "cat": categorical_ref(ref["cat"]),
                          "emb": embedding_ref(np.array(ref["emb"]), components=4)},
                         task="binary", score=numeric_ref(ref["score"]),
                         metrics={"accuracy": 0.9})


def test_numeric_ref_bins_sum_to_one_and_count_missing():
    ref = numeric_ref([1.0, 2.0, None, 3.0, float("nan"), 4.0], bins=4)
    assert ref["kind"] == "numeric" and ref["n"] == 6
    assert ref["missing"] == pytest.approx(2 / 6)
    assert sum(ref["probs"]) + ref["missing"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="finite"):
        numeric_ref([None, float("nan")])


def test_categorical_ref_pools_rare_values_into_other():
    ref = categorical_ref(["a"] * 5 + ["b"] * 3 + ["c", "d"], max_categories=2)
    assert ref["probs"] == {"a": 0.5, "b": 0.3, "__other__": 0.2}


def test_build_profile_rejects_an_unknown_task_and_a_feature_named_like_the_score():
    with pytest.raises(ValueError, match="task"):
        build_profile({}, task="regression", score=None, metrics={})
    with pytest.raises(ValueError, match="score"):
        build_profile({"score": numeric_ref([1, 2])}, task="binary", score=None, metrics={})


def test_bundle_without_profile_says_why(toy_root):
    from common.artifacts import load_bundle

    profile, reason = load_profile(load_bundle("latest", vertical="toy", root=toy_root))
    assert profile is None and "has no reference profile (trained before monitoring)" in reason


def test_false_alarm_rate_is_at_most_the_target(profile):
    """In-distribution windows: the share of windows with any alarm, over all four statistics
    together, stays at the target 1/ert (binomial noise allowed)."""
    ert, window, n_windows = 20.0, 500, 1000
    thresholds = calibrate(profile, window, ert, seed=1)
    assert set(thresholds) == {"num", "cat", "emb", "score"}
    rng = np.random.default_rng(7)
    alarms = sum(any(s["drift"] for s in window_stats(profile, draw(rng, window),
                                                      thresholds).values())
                 for _ in range(n_windows))
    target = 1 / ert
    assert alarms / n_windows <= target + 2 * np.sqrt(target * (1 - target) / n_windows)


def test_half_sd_mean_shift_is_detected_in_one_window(profile):
    thresholds = calibrate(profile, 500, ert=500)
    rng = np.random.default_rng(3)
    detected = [window_stats(profile, draw(rng, 500, shift=0.5), thresholds)["num"]
                for _ in range(20)]
    assert all(d["drift"] for d in detected)
    assert all(d["method"] == "psi" and 0.3 < d["wasserstein"] < 0.7 for d in detected)


def test_embedding_mean_shift_and_categorical_shift_are_detected(profile):
    thresholds = calibrate(profile, 500, ert=500)
    rng = np.random.default_rng(4)
    cols = draw(rng, 500)
    cols["emb"] = list(rng.normal(0, 1, (500, 8)) + 0.3)
    cols["cat"] = list(rng.choice(CATS, p=CAT_P[::-1], size=500))
    stats = window_stats(profile, cols, thresholds)
    assert stats["emb"]["drift"] and stats["emb"]["method"] == "mean_shift_chi2"
    assert stats["cat"]["drift"] and stats["cat"]["method"] == "jensen_shannon"
    assert not stats["num"]["drift"]


def test_thresholds_follow_the_target_and_features_share_it(profile):
    loose, strict = calibrate(profile, 500, ert=10), calibrate(profile, 500, ert=1000)
    assert all(strict[k] > loose[k] for k in loose)
    assert alpha_for(500, 4) == pytest.approx(1 / 2000)
    with pytest.raises(ValueError, match="ert"):
        alpha_for(1, 4)


def test_expected_auc_matches_the_pairwise_definition():
    rng = np.random.default_rng(0)
    p = np.round(rng.beta(1, 3, 300), 2)  # rounded: ties count one half
    num = den = 0.0
    for i in range(len(p)):
        for j in range(len(p)):
            if i != j:
                w = p[i] * (1 - p[j])
                den += w
                num += w * ((p[i] > p[j]) + 0.5 * (p[i] == p[j]))
    assert expected_auc(p) == pytest.approx(num / den, rel=1e-9)


def test_estimated_binary_agrees_with_realised_on_bernoulli_labels():
    rng = np.random.default_rng(11)
    p = rng.beta(1, 3, 5000)
    y = (rng.random(5000) < p).astype(int)
    est = estimated("binary", p)
    real = realised("binary", [{"score": s, "label": int(t)} for s, t in zip(p, y, strict=True)])
    assert real["n_labels"] == 5000
    assert abs(est["accuracy"] - real["accuracy"]) < 0.02
    assert abs(est["roc_auc"] - real["roc_auc"]) < 0.02


def test_estimated_multiclass_accuracy_is_the_mean_top_probability():
    rng = np.random.default_rng(12)
    probs = rng.dirichlet([0.5, 0.5, 0.5], 5000)
    y = np.array([rng.choice(3, p=row) for row in probs])
    est = estimated("multiclass", probs)
    rows = [{"prediction": str(r.argmax()), "label": str(t)} for r, t in zip(probs, y,
                                                                             strict=True)]
    assert abs(est["accuracy"] - realised("multiclass", rows)["accuracy"]) < 0.02


def test_realised_for_ranking_translation_and_labels_that_do_not_fit():
    rows = [{"prediction": '["i1", "i2"]', "label": '"i2"'},
            {"prediction": '["i3"]', "label": '"i9"'}]
    assert realised("ranking", rows) == {"n_labels": 2.0, "hit_rate": 0.5}
    tr = realised("translation", [{"prediction": "the cat sat", "label": '"the cat sat"'}])
    assert tr["chrf"] == pytest.approx(100.0)
    bad = realised("binary", [{"score": 0.3, "label": '"maybe"'}])
    assert bad == {"n_labels": 0.0}
    with pytest.raises(ValueError, match="task"):
        realised("regression", [])


def test_clock_inputs_are_logged_but_not_tested_per_window():
    """An input marked `"window": false` (hour of day) gets no threshold and no window statistic,
    so a window of a few hours' traffic cannot false-alarm on it; the others are unchanged."""
    rng = np.random.default_rng(3)
    hour = numeric_ref(rng.integers(0, 24, 5000))
    hour["window"] = False
    prof = build_profile({"num": numeric_ref(rng.normal(0, 1, 5000)), "hour": hour},
                         task="binary", score=None, metrics={})
    thresholds = calibrate(prof, window=200, ert=50)
    assert set(thresholds) == {"num"}
    stats = window_stats(prof, {"num": list(rng.normal(0, 1, 200)), "hour": [3.0] * 200},
                         thresholds)
    assert set(stats) == {"num"} and not stats["num"]["drift"]
