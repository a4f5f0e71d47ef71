"""Translation: tokenizer, sentence splitting, predictor contract, REST, checkpoints, BLEU."""

from __future__ import annotations

import argparse
import gzip

import pytest
from fastapi.testclient import TestClient

from common.errors import InvalidInput
from common.serving import create_app
from nlp.embedded import parallel_phrases
from nlp.segment import split_sentences, split_to_fit
from nlp.translation_eval import DECODING_GRID, bleu_scores, evaluate_translation
from nlp.translation_model import train_bpe


def test_bpe_round_trips_text_exactly():
    src, tgt = parallel_phrases()
    tok = train_bpe(src + tgt, 300)
    for text in ("Ein Mädchen läuft auf der Straße.", "Größe: 3,5 m — „Zitat“!"):
        ids = tok(text)["input_ids"]
        assert ids[-1] == tok.eos_token_id
        assert tok.decode(ids, skip_special_tokens=True).strip() == text


def test_sentence_split_keeps_abbreviations_and_every_word():
    text = "Dr. Smith arrived. He said: \"Hello!\" Then J. Doe left... 3 dogs barked."
    parts = split_sentences(text)
    assert parts == ["Dr. Smith arrived.", 'He said: "Hello!"', "Then J. Doe left...",
                     "3 dogs barked."]
    assert " ".join(parts).split() == text.split()
    long = "one two three four five, six seven eight nine ten eleven twelve"
    pieces = split_to_fit(long, lambda s: len(s.split()), 4)
    assert all(len(p.split()) <= 4 for p in pieces)
    assert " ".join(pieces).split() == long.split()


def test_bleu_conventions():
    refs = ["Ein Mann schläft im Park.", "Eine Frau liest."]
    scores, sigs = bleu_scores(refs, refs)
    assert scores["bleu"] == pytest.approx(100) and scores["chrf"] == pytest.approx(100)
    lower, _ = bleu_scores([r.lower() for r in refs], refs)
    assert lower["bleu_tok_lc"] == pytest.approx(100) and lower["bleu"] < 100
    assert "case:mixed" in sigs["bleu"] and "case:lc" in sigs["bleu_tok_lc"]


def test_unsupported_pair_names_the_field(translator):
    for payload, field in (({"source_lang": "fr", "target_lang": "de"}, "source_lang"),
                           ({"source_lang": "en", "target_lang": "fr"}, "target_lang")):
        with pytest.raises(InvalidInput) as e:
            translator.predict([{"text": "A dog.", **payload}])
        assert e.value.field == field
    with pytest.raises(InvalidInput) as e:
        translator.predict([{"text": " ", "source_lang": "en", "target_lang": "de"}])
    assert e.value.field == "text"


def test_long_input_is_split_and_reassembled(translator):
    sentences = [f"A dog is running in the park number {i}." for i in range(12)]
    text = " ".join(sentences)
    assert translator._n_tokens(text) > translator.max_source_tokens
    out = translator.predict([{"text": text, "source_lang": "en", "target_lang": "de"}])[0]
    assert out["segments"] == len(sentences) and out["translation"]


def test_max_new_tokens_is_explicit_and_flagged(translator):
    out = translator.predict([{"text": "A man is sleeping in the park.", "source_lang": "en",
                               "target_lang": "de", "max_new_tokens": 1}])[0]
    assert out["truncated"] is True


def test_batch_equals_single_calls(translator):
    src, _ = parallel_phrases(seed=4)
    payloads = [{"text": t, "source_lang": "en", "target_lang": "de"} for t in src[:6]]
    payloads.append({"text": " ".join(src[6:9]), "source_lang": "EN", "target_lang": "de"})
    assert translator.predict(payloads) == [translator.predict([p])[0] for p in payloads]


def test_rest_translate_one_or_many_and_errors(translator):
    with TestClient(create_app(predictors={"nlp-translation": translator})) as client:
        body = {"text": "A dog is running.", "source_lang": "en", "target_lang": "de"}
        one = client.post("/nlp/v1/translate", json=body)
        assert one.status_code == 200 and one.json() == translator.predict([body])[0]
        many = client.post("/nlp/v1/translate", json={"texts": ["A boy.", "A girl."],
                                                       "source_lang": "en", "target_lang": "de"})
        assert many.status_code == 200 and len(many.json()["translations"]) == 2
        for bad, field in (({**body, "target_lang": "fr"}, "target_lang"),
                           ({**body, "source_lang": "ja"}, "source_lang"),
                           ({**body, "text": ""}, "text"),
                           ({**body, "text": "x" * 5001}, "text"),
                           ({"source_lang": "en", "target_lang": "de"}, "text")):
            r = client.post("/nlp/v1/translate", json=bad)
            assert r.status_code == 422, bad
            assert r.json()["error"]["field"] == field


@pytest.mark.slow
def test_local_checkpoint_is_packaged_without_training(tmp_path):
    """A user's own checkpoint folder (here a tiny Marian saved with save_pretrained)."""
    from common.registry import get_vertical
    from nlp.translation_model import SIZES, marian_from_scratch
    from nlp.translation_predictor import TranslationPredictor

    src, tgt = parallel_phrases()
    tok = train_bpe(src + tgt, 300)
    model = marian_from_scratch(tok, SIZES["test"])
    model.save_pretrained(tmp_path / "ckpt")
    tok.save_pretrained(tmp_path / "ckpt")
    args = argparse.Namespace(root=str(tmp_path / "store"), preset="quick", data=None,
                              checkpoint=str(tmp_path / "ckpt"), src="en", tgt="de",
                              epochs=None, device=None)
    bundle = get_vertical("nlp-translation").train(args)
    p = TranslationPredictor.load(bundle.path)
    out = p.predict([{"text": "A dog.", "source_lang": "en", "target_lang": "de"}])[0]
    assert out["source_lang"] == "en" and isinstance(out["translation"], str)
    assert bundle.manifest["model"]["config"]["checkpoint"] == str(tmp_path / "ckpt")


@pytest.mark.slow
def test_evaluate_on_a_data_folder(tmp_path):
    src, tgt = parallel_phrases()
    splits = {"train": (64, 512), "val": (0, 32), "test_x": (32, 64)}
    for name, (lo, hi) in splits.items():
        for lang, lines in (("en", src), ("de", tgt)):
            with gzip.open(tmp_path / f"{name}.{lang}.gz", "wt", encoding="utf-8") as f:
                f.write("\n".join(lines[lo:hi]) + "\n")
    args = argparse.Namespace(protocol="multi30k", data=str(tmp_path), out=None, bundle=None,
                              seeds=None, preset="test", root=str(tmp_path / "store"),
                              device=None, src="en", tgt="de", test_prefix="test_x",
                              checkpoint=None, epochs=None, num_beams=None)
    report = evaluate_translation(args)
    for k in ("bleu", "chrf", "bleu_tok_lc"):
        assert 0 <= report["metrics"][k] <= 100
    assert report["metrics"]["n_test"] == 32
    assert report["signatures"]["bleu"].startswith("nrefs:1")
    again = evaluate_translation(argparse.Namespace(**{**vars(args), "bundle": "latest"}))
    assert again["metrics"]["bleu"] == pytest.approx(report["metrics"]["bleu"])

    # decoding chosen on val: every grid point tried, the best val BLEU used on test
    tuned = evaluate_translation(argparse.Namespace(**{**vars(args), "bundle": "latest",
                                                       "tune_decoding": True}))
    dec = tuned["config"]["decoding"]
    assert dec["chosen_on"] == "val" and len(dec["tried"]) == len(DECODING_GRID)
    assert dec["chosen"]["val_bleu"] == max(t["val_bleu"] for t in dec["tried"])
    assert tuned["metrics"]["num_beams"] == dec["chosen"]["num_beams"]
    assert tuned["metrics"]["length_penalty"] == dec["chosen"]["length_penalty"]
    for lang in ("en", "de"):
        (tmp_path / f"val.{lang}.gz").unlink()
    with pytest.raises(InvalidInput) as e:  # nothing to tune on: refused, never the test split
        evaluate_translation(argparse.Namespace(**{**vars(args), "bundle": "latest",
                                                   "tune_decoding": True}))
    assert e.value.field == "tune_decoding"


def test_work_dir_keeps_checkpoints_and_a_rerun_resumes(tmp_path):
    """`--work-dir`: the run leaves checkpoints + metrics.jsonl; the same command again resumes
    from the last checkpoint (here: the finished run) instead of training from scratch."""
    import torch

    from nlp.translation_train import TranslationConfig, fit_translation

    src, tgt = parallel_phrases()
    cfg = TranslationConfig.preset("test", epochs=2)
    work = tmp_path / "work"
    first = fit_translation(src[:96], tgt[:96], cfg, val=(src[96:128], tgt[96:128]),
                            out_dir=str(work))
    assert (work / "metrics.jsonl").exists() and any(work.glob("*.pt"))
    again = fit_translation(src[:96], tgt[:96], cfg, val=(src[96:128], tgt[96:128]),
                            out_dir=str(work))
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    assert again.best_val_loss == pytest.approx(first.best_val_loss)
    with pytest.raises(InvalidInput, match="another configuration or dataset"):
        fit_translation(src[:90], tgt[:90], cfg, out_dir=str(work))


def test_work_dir_option_only_where_training_resumes():
    from common.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["evaluate", "nlp-translation", "--out", "r.json", "--work-dir", "w"])
    assert args.work_dir == "w"
    with pytest.raises(SystemExit):
        parser.parse_args(["evaluate", "recommender", "--out", "r.json", "--work-dir", "w"])
