"""Predictor, REST routes and batch scoring on a bundle trained from the embedded default."""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from common.batch import score_file
from common.serving import create_app
from recommender.predictor import RecommenderPredictor

pytestmark = pytest.mark.slow  # trains models / a bundle (seconds each)


@pytest.fixture()
def predictor(bundle_root):
    return RecommenderPredictor.load("latest", root=bundle_root)


def test_known_user_gets_unseen_personal_items(predictor):
    out = predictor.predict([{"user_id": "u1", "k": 5}])[0]
    assert out["fallback"] is None and len(out["items"]) == 5
    seen = {str(predictor.enc.items[i]) for i in predictor.history("u1")}
    assert not seen & {it["item_id"] for it in out["items"]}
    scores = [it["score"] for it in out["items"]]
    assert scores == sorted(scores, reverse=True)
    assert out["model_version"] == predictor.bundle.version


def test_include_seen_can_return_seen_items(predictor):
    seen = {str(predictor.enc.items[i]) for i in predictor.history("u1")}
    out = predictor.predict([{"user_id": "u1", "k": 200, "exclude_seen": False}])[0]
    assert seen <= {it["item_id"] for it in out["items"]}


def test_unknown_user_gets_popularity_and_is_told(predictor):
    out = predictor.predict([{"user_id": "nobody", "k": 3}])[0]
    assert out["fallback"] == "popularity" and "unknown user" in out["reason"]
    pop = predictor.popularity.argsort(descending=True)[:3].tolist()
    assert [it["item_id"] for it in out["items"]] == [str(predictor.enc.items[i]) for i in pop]


def test_events_reach_the_seen_filter_at_once(predictor):
    first = predictor.predict([{"user_id": "u2", "k": 3}])[0]["items"][0]["item_id"]
    res = predictor.record_events(predictor.parse_events([{"user_id": "u2", "item_id": first},
                                                          {"user_id": "u2", "item_id": first},
                                                          {"user_id": "u2", "item_id": "zzz"}]))
    assert (res.accepted, res.duplicates, res.unknown_items) == (1, 1, ["zzz"])
    after = predictor.predict([{"user_id": "u2", "k": 3}])[0]
    assert first not in {it["item_id"] for it in after["items"]}


def test_new_user_with_events_is_personalised_by_history_models(predictor):
    items = [str(predictor.enc.items[i]) for i in range(3)]
    predictor.record_events(predictor.parse_events([{"user_id": "fresh", "item_id": i}
                                                    for i in items]))
    out = predictor.predict([{"user_id": "fresh", "k": 5}])[0]
    assert not set(items) & {it["item_id"] for it in out["items"]}
    if predictor.model.history_based:
        assert out["fallback"] is None
    else:
        assert out["fallback"] == "popularity" and "cannot personalise" in out["reason"]


def test_similar_items_exclude_the_item_itself(predictor):
    out = predictor.predict([{"item_id": "i3", "k": 4}])[0]
    assert len(out["items"]) == 4 and "i3" not in {it["item_id"] for it in out["items"]}


def test_faiss_retrieval_answers_like_exact(bundle_root):
    exact = RecommenderPredictor.load("latest", root=bundle_root)
    ann = RecommenderPredictor.load("latest", root=bundle_root, retrieval="faiss")
    payloads = [{"user_id": f"u{n}", "k": 10} for n in range(30)]
    a, b = exact.predict(payloads), ann.predict(payloads)
    overlap = [len({i["item_id"] for i in x["items"]} & {i["item_id"] for i in y["items"]}) / 10
               for x, y in zip(a, b, strict=True)]
    assert sum(overlap) / len(overlap) >= 0.95


def test_rest_routes_and_errors(predictor):
    app = create_app(predictors={"recommender": predictor})
    with TestClient(app) as client:
        r = client.get("/recommender/v1/users/u1/recommendations", params={"k": 3})
        assert r.status_code == 200 and len(r.json()["items"]) == 3
        r = client.get("/recommender/v1/items/no-such-item/similar")
        assert r.status_code == 404 and "no-such-item" in r.json()["error"]["message"]
        for bad in (0, -1, 100000, "ten"):
            r = client.get("/recommender/v1/users/u1/recommendations", params={"k": bad})
            assert r.status_code == 422 and r.json()["error"]["field"] == "k"
        top = client.get("/recommender/v1/users/u5/recommendations").json()["items"][0]
        r = client.post("/recommender/v1/events",
                        json={"events": [{"user_id": "u5", "item_id": top["item_id"]}]})
        assert r.status_code == 200 and r.json()["accepted"] == 1
        again = client.get("/recommender/v1/users/u5/recommendations").json()["items"]
        assert top["item_id"] not in {it["item_id"] for it in again}
        r = client.post("/recommender/v1/events", json={"events": [{"user_id": "u5"}]})
        assert r.status_code == 422


def test_batch_csv_of_users_and_all_users_mode(bundle_root, tmp_path):
    src = tmp_path / "users.csv"
    pd.DataFrame({"user_id": ["u1", "u2", "ghost", ""]}).to_csv(src, index=False)
    args = argparse.Namespace(all_users=False, k=5, include_seen=False, retrieval="exact",
                              bundle="latest", root=str(bundle_root))
    s = score_file("recommender", src, tmp_path / "top.parquet", root=bundle_root, args=args)
    assert (s["scored"], s["rejected"]) == (3, 1)  # the empty id is rejected with a reason
    df = pd.read_parquet(tmp_path / "top.parquet")
    assert df.loc[df["user_id"] == "ghost", "fallback"].item() == "popularity"
    args.all_users = True
    s = score_file("recommender", src, tmp_path / "all.parquet", root=bundle_root, args=args,
                   chunk_size=100)
    n_users = len(RecommenderPredictor.load("latest", root=bundle_root).enc.users)
    assert s["scored"] == n_users and s["rejected"] == 0


def test_batch_of_n_equals_n_single_calls(predictor, bundle_root):
    payloads = [{"user_id": f"u{n}", "k": 7} for n in range(40)] + [{"item_id": "i1", "k": 3}]
    single = RecommenderPredictor.load("latest", root=bundle_root)
    assert predictor.predict(payloads) == [single.predict([p])[0] for p in payloads]


def test_a_swapped_in_bundle_keeps_posted_events(bundle_root):
    """The server's alias follower hands live state to the next bundle (adopt_state)."""
    old = RecommenderPredictor.load("latest", root=bundle_root)
    items = list(old.enc.item_index)
    old.record_events(old.parse_events([{"user_id": "u3", "item_id": items[0]},
                                        {"user_id": "newcomer", "item_id": items[1]}]))
    new = RecommenderPredictor.load("latest", root=bundle_root)
    assert new.history("newcomer").size == 0
    new.adopt_state(old)
    for user in ("u3", "newcomer"):
        assert np.array_equal(new.history(user), old.history(user))
    assert RecommenderPredictor.routing_field == "user_id"
