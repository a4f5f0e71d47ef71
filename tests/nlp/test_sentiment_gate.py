"""The nlp-sentiment gate: accuracy of an existing bundle on an SST-2-style TSV."""

from __future__ import annotations

import pytest

from common.artifacts import load_bundle
from common.errors import InvalidInput
from common.registry import get_vertical
from nlp.embedded import sentiment_examples
from nlp.sentiment_eval import score_predictor


@pytest.fixture(scope="module")
def bundle(sentiment_root):
    return load_bundle("latest", vertical="nlp-sentiment", root=sentiment_root)


def _tsv(path, texts, labels):
    path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in
                                                  zip(texts, labels, strict=True)))
    return path


def test_gate_accuracy_on_sst2_layout(bundle, sentiment, tmp_path):
    v = get_vertical("nlp-sentiment")
    assert v.gate_metric == "accuracy"
    texts, labels = sentiment_examples(60, seed=99)  # not the training seed
    m = v.gate_score(bundle, _tsv(tmp_path / "dev.tsv", texts, labels), None)
    assert m["n"] == 60 and m == pytest.approx(
        {**{k: score_predictor(sentiment, texts, labels)[k] for k in ("accuracy", "macro_f1",
                                                                      "ece")}, "n": 60.0})
    # SST-2's raw 0/1 with --label-names, and --limit
    raw = ["0" if y == "negative" else "1" for y in labels]
    args = type("A", (), {"label_names": "negative,positive", "limit": 30, "device": None})()
    m30 = v.gate_score(bundle, _tsv(tmp_path / "raw.tsv", texts, raw), args)
    assert m30["n"] == 30 and m30["accuracy"] == pytest.approx(
        score_predictor(sentiment, texts[:30], labels[:30])["accuracy"])


@pytest.mark.parametrize("case, field, reason", [
    ("raw_labels", "label_names", "eval labels ['0', '1'] not in the model's"),
    ("no_label_column", "label_column", "none of"),
    ("empty", "data", "no labelled rows"),
    ("wrong_type", "data", "use .csv, .tsv, .jsonl or .parquet"),
])
def test_unfitting_data_is_one_line(bundle, tmp_path, case, field, reason):
    path = _tsv(tmp_path / "dev.tsv", ["good", "bad"], ["1", "0"])
    if case == "no_label_column":
        path.write_text("sentence\tscore_x\ngood\t1\n")
    elif case == "empty":
        path.write_text("sentence\tlabel\n")
    elif case == "wrong_type":
        path = tmp_path / "dev.txt"
        path.write_text("good 1\n")
    with pytest.raises(InvalidInput) as e:
        get_vertical("nlp-sentiment").gate_score(bundle, path, None)
    assert e.value.field == field and reason in e.value.reason and "\n" not in str(e.value)
