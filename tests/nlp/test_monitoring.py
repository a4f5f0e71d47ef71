"""Monitoring parts of NLP: reference profiles in the bundles, served records, the text id and
the feedback routes (sentiment and translation)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from common.monitoring.profile import load_profile
from common.serving import create_app


def _records(predictor, payloads):
    seen: list[dict] = []

    def hook(pred, requests, where, outputs, results):
        seen.extend(pred.monitor_record(requests[i], outputs[j], results[i])
                    for j, i in enumerate(where))

    results = predictor.run_each([predictor.parse(p) for p in payloads], monitor=hook)
    return seen, results


def test_sentiment_profile_has_lengths_unknowns_truncation_and_the_embedding(sentiment):
    profile, why = load_profile(sentiment.bundle)
    assert why is None and profile["task"] == "binary"
    feats = profile["features"]
    assert set(feats) == {"num_tokens", "unk_rate", "truncated", "embedding"}
    assert feats["embedding"]["kind"] == "embedding"
    assert len(feats["embedding"]["mean"]) == sentiment.model.config.hidden_size
    assert feats["truncated"]["kind"] == "categorical" and profile["classes"] == sentiment.labels
    assert {"accuracy", "ece"} <= set(profile["metrics"])


def test_sentiment_record_matches_the_profile(sentiment):
    profile, _ = load_profile(sentiment.bundle)
    payloads = [{"text": "The support team was fast and friendly.", "text_id": "t-1"},
                {"text": "漢字 ßøæ ☃☃ ✈"},  # characters the tiny tokenizer has never seen
                {"text": " ".join(["slow"] * 300)}]
    recs, answers = _records(sentiment, payloads)
    for rec, ans in zip(recs, answers, strict=True):
        assert set(rec["features"]) == set(profile["features"])
        assert len(rec["features"]["embedding"]) == len(profile["features"]["embedding"]["mean"])
        assert rec["score"] == ans.probabilities[sentiment.labels[1]]
        assert rec["prediction"] == ans.label and rec["features"]["num_tokens"] == ans.num_tokens
    assert recs[0]["id"] == "t-1" == answers[0].text_id and recs[1]["id"] is None
    assert recs[0]["features"]["unk_rate"] == 0.0 < recs[1]["features"]["unk_rate"]
    assert [r["features"]["truncated"] for r in recs] == ["false", "false", "true"]
    assert "_embedding" not in answers[0].model_dump()


def test_sentiment_feedback_route(sentiment, tmp_path):
    with TestClient(create_app(predictors={"nlp-sentiment": sentiment}, log_dir=tmp_path)) as c:
        r = c.post("/nlp/v1/sentiment", json={"text": "Great service.", "text_id": "t-9"})
        assert r.status_code == 200 and r.json()["text_id"] == "t-9"
        both = c.post("/nlp/v1/sentiment", json={"texts": ["a", "b"], "text_id": "t-10"})
        assert both.status_code == 422 and both.json()["error"]["field"] == "text_id"
        fb = c.post("/sentiment/v1/feedback", json={"feedback": [
            {"id": "t-9", "label": sentiment.labels[1]}, {"id": "t-404", "label":
                                                           sentiment.labels[0]}]})
        assert fb.status_code == 200, fb.text
        assert fb.json() == {"accepted": 1, "unknown": 1, "unknown_ids": ["t-404"]}
        for label in (True, "meh"):
            bad = c.post("/sentiment/v1/feedback", json={"feedback": [{"id": "t-9",
                                                                       "label": label}]})
            assert bad.status_code == 422 and bad.json()["error"]["field"] == "feedback.0.label"


def test_translation_profile_record_and_feedback(translator, tmp_path):
    profile, why = load_profile(translator.bundle)
    assert why is None and profile["task"] == "translation"
    assert set(profile["features"]) == {"num_tokens", "unk_rate", "truncated"}
    assert profile["score_name"] == "length_ratio" and "chrf" in profile["metrics"]
    payload = {"text": "A dog is running in the park.", "source_lang": "en", "target_lang": "de"}
    (rec,), (ans,) = _records(translator, [payload])
    assert set(rec["features"]) == set(profile["features"])
    assert rec["prediction"] == ans.translation
    assert rec["score"] == len(ans.translation) / len(payload["text"])
    assert rec["features"]["truncated"] == ("true" if ans.truncated else "false")
    with TestClient(create_app(predictors={"nlp-translation": translator},
                               log_dir=tmp_path)) as c:
        r = c.post("/nlp/v1/translate", json=payload, headers={"X-Request-ID": "tr-1"})
        assert r.status_code == 200
        fb = c.post("/translation/v1/feedback", json={"feedback": [
            {"id": "tr-1", "label": "Ein Hund rennt im Park."}, {"id": "tr-2", "label": "x"}]})
        assert fb.status_code == 200, fb.text
        assert (fb.json()["accepted"], fb.json()["unknown"]) == (1, 1)
        bad = c.post("/translation/v1/feedback", json={"feedback": [{"id": "tr-1",
                                                                     "label": 3}]})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "feedback.0.label"
