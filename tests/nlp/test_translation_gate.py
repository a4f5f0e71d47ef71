"""The nlp-translation gate: sacreBLEU of an existing bundle on a parallel split."""

from __future__ import annotations

import pytest

from common.artifacts import load_bundle
from common.errors import InvalidInput
from common.registry import get_vertical
from nlp.embedded import parallel_phrases
from nlp.translation_eval import bleu_scores, translate_all


@pytest.fixture(scope="module")
def bundle(translation_root):
    return load_bundle("latest", vertical="nlp-translation", root=translation_root)


def _split(folder, prefix, src, tgt):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{prefix}.en").write_text("".join(s + "\n" for s in src))
    (folder / f"{prefix}.de").write_text("".join(t + "\n" for t in tgt))
    return folder


def test_gate_bleu_on_a_parallel_split(bundle, translator, tmp_path):
    v = get_vertical("nlp-translation")
    assert v.gate_metric == "bleu"
    src, tgt = parallel_phrases(seed=5)
    folder = _split(tmp_path / "data", "test", src[:12], tgt[:12])
    args = type("A", (), {"limit": 6, "device": None})()
    m = v.gate_score(bundle, folder, args)  # DIR: the `test` split, first 6 sentences
    want = bleu_scores(translate_all(translator, src[:6]), tgt[:6])[0]
    assert m == pytest.approx({"bleu": want["bleu"], "chrf": want["chrf"], "n": 6.0})
    _split(folder, "dev2", src[:4], tgt[:4])
    assert v.gate_score(bundle, folder / "dev2", None)["n"] == 4  # DIR/PREFIX


@pytest.mark.parametrize("case, reason", [
    ("no_split", "has no test.en[.gz] nor test_2016_flickr.en[.gz]"),
    ("wrong_lang", "has no test.de.gz or test.de"),
    ("misaligned", "test: 2 en lines but 1 de lines"),
    ("empty", "test: no sentence pairs"),
])
def test_unfitting_data_is_one_line(bundle, tmp_path, case, reason):
    folder = tmp_path / "data"
    folder.mkdir()
    if case == "wrong_lang":
        (folder / "test.en").write_text("A dog.\n")
        (folder / "test.fr").write_text("Un chien.\n")
    elif case == "misaligned":
        (folder / "test.en").write_text("A dog.\nA cat.\n")
        (folder / "test.de").write_text("Ein Hund.\n")
    elif case == "empty":
        _split(folder, "test", [], [])
    with pytest.raises(InvalidInput) as e:
        get_vertical("nlp-translation").gate_score(bundle, folder, None)
    assert e.value.field == "data" and reason in e.value.reason and "\n" not in str(e.value)
