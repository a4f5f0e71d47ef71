"""Monitoring parts of the recommender: the bundle's reference profile, served records, and
the feedback route."""

from __future__ import annotations

import json

import numpy as np
from fastapi.testclient import TestClient

from common.monitoring.profile import load_profile
from common.serving import create_app
from recommender.predictor import RecommenderPredictor

FEATURES = {"user", "activity", "popularity", "k"}


def test_the_bundle_carries_a_request_profile(bundle_root):
    p = RecommenderPredictor.load("latest", root=bundle_root)
    profile, why = load_profile(p.bundle)
    assert why is None and profile["task"] == "ranking" and profile["score"] is None
    assert set(profile["features"]) == FEATURES
    assert profile["features"]["user"]["probs"]["known"] == 1.0  # training users
    assert profile["features"]["activity"]["mean"] > 1
    assert "precision_at_10" in profile["metrics"]


def test_records_of_known_and_unknown_users_and_no_record_for_similar_items(bundle_root):
    p = RecommenderPredictor.load("latest", root=bundle_root)
    seen: list = []

    def hook(pred, requests, where, outputs, results):
        seen.extend(pred.monitor_record(requests[i], outputs[j], results[i])
                    for j, i in enumerate(where))

    reqs = [{"user_id": "u1", "k": 5}, {"user_id": "nobody", "k": 3}, {"item_id": "i3", "k": 2}]
    answers = p.run_each([p.parse(r) for r in reqs], monitor=hook)
    known, unknown, similar = seen
    assert similar is None
    for rec, ans, req in ((known, answers[0], reqs[0]), (unknown, answers[1], reqs[1])):
        assert set(rec["features"]) == FEATURES and rec["id"] == req["user_id"]
        ids = [it.item_id for it in ans.items]
        assert json.loads(rec["prediction"]) == ids and rec["features"]["k"] == req["k"]
        pop = p.popularity.numpy().astype(np.float64)
        want = np.log1p(pop[[p.enc.item_index[i] for i in ids]]).mean()
        assert abs(rec["features"]["popularity"] - want) < 1e-9
    assert known["features"]["user"] == "known" and known["features"]["activity"] > 0
    assert unknown["features"]["user"] == "unknown" and unknown["features"]["activity"] == 0


def test_feedback_route(bundle_root, tmp_path):
    app = create_app(predictors={"recommender": RecommenderPredictor.load("latest",
                                                                         root=bundle_root)},
                     log_dir=tmp_path)
    with TestClient(app) as c:
        top = c.get("/recommender/v1/users/u2/recommendations", params={"k": 3}).json()
        item = top["items"][0]["item_id"]
        fb = c.post("/recommender/v1/feedback", json={"feedback": [
            {"id": "u2", "label": item}, {"id": "ghost", "label": 7}]})
        assert fb.status_code == 200, fb.text
        assert fb.json() == {"accepted": 1, "unknown": 1, "unknown_ids": ["ghost"]}
        bad = c.post("/recommender/v1/feedback", json={"feedback": [{"id": "u2",
                                                                     "label": True}]})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "feedback.0.label"


def test_a_bundle_trained_before_monitoring_serves_with_monitoring_off(tmp_path, monkeypatch):
    from common.artifacts import BundleWriter
    from common.monitoring.profile import PROFILE_FILE
    from recommender.vertical import RecommenderVertical

    add_json = BundleWriter.add_json

    def without_profile(self, name, obj):  # a bundle as written before monitoring existed
        return None if name == PROFILE_FILE else add_json(self, name, obj)

    monkeypatch.setattr(BundleWriter, "add_json", without_profile)
    RecommenderVertical().train_default(tmp_path / "old", preset="test")
    monkeypatch.undo()
    p = RecommenderPredictor.load("latest", root=tmp_path / "old")
    assert not (p.bundle.path / PROFILE_FILE).exists()
    with TestClient(create_app(predictors={"recommender": p}, log_dir=tmp_path / "log")) as c:
        assert c.get("/recommender/v1/users/u1/recommendations").status_code == 200
        mon = c.get("/v1/monitoring/recommender").json()
        assert mon["enabled"] is False and "no reference profile" in mon["reason"]
