"""Sentiment: data reading, label handling, predictor outputs, truncation, REST, batch, eval."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from common.batch import score_file
from common.errors import InvalidInput
from common.serving import create_app
from nlp.data import load_labelled
from nlp.embedded import sentiment_examples
from nlp.sentiment_eval import evaluate_sentiment
from nlp.sentiment_train import SentimentConfig, fit_sentiment, label_space, publish_sentiment
from tests.close import same_answer


def test_label_space_sorts_numbers_and_renames():
    classes, rename = label_space(["1", "0", "10", "2"])
    assert classes == ["0", "1", "2", "10"]
    classes, rename = label_space(["1", "0", "1"], ["negative", "positive"])
    assert classes == ["negative", "positive"] and rename == {"0": "negative", "1": "positive"}
    with pytest.raises(InvalidInput) as e:
        label_space(["a", "b"], ["x"])
    assert e.value.field == "label_names"
    with pytest.raises(InvalidInput):
        label_space(["only"])


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_load_labelled_any_format_and_column_names(tmp_path, suffix):
    df = pd.DataFrame({"Review": ['good "stuff"', "bad", "  "], "stars": [5, 1, 3]})
    path = tmp_path / f"data{suffix}"
    if suffix == ".csv":
        df.to_csv(path, index=False)
    elif suffix == ".tsv":
        path.write_text("Review\tstars\n" + "".join(f"{a}\t{b}\n" for a, b in df.values))
    else:
        df.to_json(path, orient="records", lines=True)
    texts, labels = load_labelled(path, text_column="Review", label_column="stars")
    assert texts == ['good "stuff"', "bad"] and labels == ["5", "1"]  # blank text dropped
    with pytest.raises(InvalidInput) as e:
        load_labelled(path)  # "Review" is found (case-insensitive), "stars" is not a known name
    assert e.value.field == "label_column"


def test_probabilities_cover_every_label_and_sum_to_one(sentiment):
    out = sentiment.predict([{"text": "The delivery was superb."}])[0]
    assert set(out["probabilities"]) == {"negative", "positive"}
    assert abs(sum(out["probabilities"].values()) - 1) < 1e-5
    assert out["label"] == max(out["probabilities"], key=out["probabilities"].get)
    assert out["model_version"] == sentiment.bundle.version


def test_long_text_is_truncated_and_says_so(sentiment):
    short, long = sentiment.predict([{"text": "Nice."}, {"text": "great service " * 100}])
    assert short["truncated"] is False and short["num_tokens"] <= short["max_tokens"]
    assert long["truncated"] is True and long["num_tokens"] > long["max_tokens"]


def test_batch_equals_single_calls(sentiment):
    texts, _ = sentiment_examples(12, seed=5)
    texts.append("word " * 80)
    payloads = [{"text": t} for t in texts]
    batched, singles = sentiment.predict(payloads), [sentiment.predict([p])[0] for p in payloads]
    assert same_answer(batched, singles), (batched, singles)


def test_empty_or_too_long_text_is_rejected(sentiment):
    for bad in ("", "   ", "x" * 10_001):
        with pytest.raises(InvalidInput) as e:
            sentiment.predict([{"text": bad}])
        assert e.value.field == "text"


def test_rest_one_or_many_and_field_errors(sentiment):
    with TestClient(create_app(predictors={"nlp-sentiment": sentiment})) as client:
        one = client.post("/nlp/v1/sentiment", json={"text": "What a delightful hotel!"})
        assert one.status_code == 200
        assert one.json() == sentiment.predict([{"text": "What a delightful hotel!"}])[0]
        many = client.post("/nlp/v1/sentiment", json={"texts": ["Great app.", "Rude staff."]})
        assert many.status_code == 200
        assert many.json()["results"] == sentiment.predict(
            [{"text": "Great app."}, {"text": "Rude staff."}])
        for body, field in (({"texts": ["ok", " "]}, "texts.1"), ({"text": ""}, "text"),
                            ({}, "text"), ({"text": "a", "texts": ["b"]}, "text"),
                            ({"text": "y" * 10_001}, "text")):
            r = client.post("/nlp/v1/sentiment", json=body)
            assert r.status_code == 422, body
            assert r.json()["error"]["field"] == field


def test_score_file_with_text_column(sentiment_root, tmp_path):
    src = tmp_path / "reviews.csv"
    pd.DataFrame({"id": [1, 2, 3], "review": ["Superb support team.", "", "Awful app."]}).to_csv(
        src, index=False)
    args = argparse.Namespace(text_column="review", quantize=False)
    s = score_file("nlp-sentiment", src, tmp_path / "out.parquet", root=sentiment_root,
                   args=args, keep=["id"])
    assert (s["read"], s["scored"], s["rejected"]) == (3, 2, 1)
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert list(out["id"]) == [1, 3]
    assert set(json.loads(out["probabilities"].iloc[0])) == {"negative", "positive"}
    reject = json.loads((tmp_path / "out.parquet.rejects.jsonl").read_text().splitlines()[0])
    assert reject["row"] == 1 and reject["field"] == "text"


def test_quantized_predictor_agrees(sentiment_root, sentiment):
    from nlp.sentiment_predictor import SentimentPredictor

    q = SentimentPredictor.load("latest", root=sentiment_root, quantize=True)
    texts, _ = sentiment_examples(20, seed=9)
    a = sentiment.predict([{"text": t} for t in texts])
    b = q.predict([{"text": t} for t in texts])
    pa = np.array([r["probabilities"]["positive"] for r in a])
    pb = np.array([r["probabilities"]["positive"] for r in b])
    assert np.abs(pa - pb).max() < 0.1


def _eval_args(tmp_path, root, **kw) -> argparse.Namespace:
    base = dict(protocol="holdout", data=None, eval=None, out=None, bundle=None, seeds=None,
                preset="test", root=str(root), device=None, text_column=None,
                label_column=None, label_names=None, backbone=None, epochs=None,
                max_length=None, train_limit=None, no_baseline=True)
    return argparse.Namespace(**{**base, **kw})


def test_evaluate_existing_bundle_reports_accuracy_f1_ece(sentiment_root, tmp_path):
    texts, labels = sentiment_examples(60, seed=3)
    ev = tmp_path / "eval.jsonl"
    pd.DataFrame({"sentence": texts, "sentiment": labels}).to_json(ev, orient="records",
                                                                    lines=True)
    report = evaluate_sentiment(_eval_args(tmp_path, sentiment_root, eval=str(ev),
                                           bundle="latest"))
    for k in ("accuracy", "macro_f1", "ece"):
        assert 0.0 <= report["metrics"][k] <= 1.0
    assert report["metrics"]["n_eval"] == 60 and report["bundle"]


@pytest.mark.slow
def test_multiclass_from_a_file_with_renamed_labels(tmp_path):
    """3 classes stored as 0/1/2 in a TSV, renamed; trained through evaluate (tiny backbone)."""
    texts, labels = sentiment_examples(300, seed=1, classes=3)
    code = {"negative": 0, "neutral": 1, "positive": 2}
    for name, (lo, hi) in {"train.tsv": (0, 240), "dev.tsv": (240, 300)}.items():
        (tmp_path / name).write_text("text\tlabel\n" + "".join(
            f"{t}\t{code[y]}\n" for t, y in zip(texts[lo:hi], labels[lo:hi], strict=True)))
    report = evaluate_sentiment(_eval_args(
        tmp_path, tmp_path / "store", data=str(tmp_path / "train.tsv"),
        eval=str(tmp_path / "dev.tsv"), label_names="negative,neutral,positive", epochs=8))
    assert report["metrics"]["accuracy"] > 1 / 3  # better than chance on 3 balanced classes
    from nlp.sentiment_predictor import SentimentPredictor

    p = SentimentPredictor.load(report["bundle"])
    assert set(p.predict([{"text": "It was ordinary."}])[0]["probabilities"]) == set(code)


@pytest.mark.slow
def test_any_local_checkpoint_folder_is_a_backbone(tmp_path):
    from nlp.sentiment_model import tiny_bert, train_wordpiece

    texts, labels = sentiment_examples(120, seed=2)
    tok = train_wordpiece(texts)
    tiny_bert(len(tok), 2, {0: "a", 1: "b"}).save_pretrained(tmp_path / "ckpt")
    tok.save_pretrained(tmp_path / "ckpt")
    cfg = SentimentConfig.preset("test", backbone=str(tmp_path / "ckpt"), epochs=1)
    fit = fit_sentiment(texts, labels, cfg)
    assert fit.labels == ["negative", "positive"] and fit.temperature > 0
    bundle = publish_sentiment(fit, tmp_path / "store", "fp", "test")
    from nlp.sentiment_predictor import SentimentPredictor

    out = SentimentPredictor.load(bundle.path).predict([{"text": "Great!"}])[0]
    assert set(out["probabilities"]) == {"negative", "positive"}
