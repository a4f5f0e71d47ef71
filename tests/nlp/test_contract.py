"""The NLP routes judge bodies exactly as the OpenAPI document describes them (findings of the
Schemathesis fuzz, issue 14): `text` or `texts`, exactly one, neither null, each with a
non-space character; the translation pair and output limit of the served bundle are in the
document, and `max_new_tokens` past the decoder's positions is a 422 (it was a 500)."""

from __future__ import annotations

import jsonschema_rs
import pytest
from fastapi.testclient import TestClient

from common.serving import create_app
from nlp.http_schemas import NOT_BLANK

PAIR = {"source_lang": "en", "target_lang": "de"}


@pytest.fixture(scope="module")
def sentiment_client(sentiment):
    with TestClient(create_app(predictors={"nlp-sentiment": sentiment})) as c:
        yield c


@pytest.fixture(scope="module")
def translate_client(translator):
    with TestClient(create_app(predictors={"nlp-translation": translator})) as c:
        yield c


def schema_of(client, name):
    return client.get("/openapi.json").json()["components"]["schemas"][name]


@pytest.mark.parametrize("body, field", [
    ({"text": "good", "texts": ["bad"]}, "text"),   # was schema-valid, refused in code
    ({"text": None, "texts": ["fine"]}, "text"),    # null was taken as absent
    ({"texts": None, "text": "fine"}, "texts"),
    ({"text": " \t\n "}, "text"),                   # blank: empty once stripped
])
def test_sentiment_text_or_texts(sentiment_client, body, field):
    r = sentiment_client.post("/nlp/v1/sentiment", json=body)
    assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text


def test_sentiment_document_states_the_either_or(sentiment_client):
    schema = schema_of(sentiment_client, "SentimentHTTPRequest")
    assert schema["oneOf"] == [{"required": ["text"]}, {"required": ["texts"]}]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["text"] == {**schema["properties"]["text"], "type": "string",
                                            "pattern": NOT_BLANK, "minLength": 1}
    assert "default" not in schema["properties"]["text"]


@pytest.mark.parametrize("text", ["\u0085", "\ufeff", "\x1f", " \u3000", "\u200b", "a"])
def test_blank_means_the_same_to_the_schema_and_the_server(sentiment_client, text):
    # seed 17: "\u0085" matched the schema's \S (ECMA) but not pydantic's (Rust) and was refused
    schema = schema_of(sentiment_client, "SentimentHTTPRequest")["properties"]["text"]
    valid = jsonschema_rs.validator_for(schema).is_valid(text)
    r = sentiment_client.post("/nlp/v1/sentiment", json={"text": text})
    assert r.status_code == (200 if valid else 422), r.text


def test_translation_document_states_the_served_pair_and_limit(translate_client, translator):
    props = schema_of(translate_client, "TranslateHTTPRequest")["properties"]
    assert props["source_lang"]["enum"] == [translator.src]
    assert props["target_lang"]["enum"] == [translator.tgt]
    assert props["max_new_tokens"]["maximum"] == min(512, translator.max_new_tokens_limit)


@pytest.mark.parametrize("change, field", [
    ({"source_lang": "EN"}, "source_lang"),         # the enum is exact: no case folding
    ({"max_new_tokens": True}, "max_new_tokens"),
    ({"max_new_tokens": "16"}, "max_new_tokens"),
    ({"text": "a", "texts": ["b"]}, "text"),
])
def test_translation_refuses_what_the_schema_refuses(translate_client, change, field):
    r = translate_client.post("/nlp/v1/translate", json={"text": "A dog.", **PAIR, **change})
    assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text


def test_max_new_tokens_past_the_decoder_positions_is_a_422(translate_client, translator):
    over = translator.max_new_tokens_limit + 1
    assert over <= 512  # within the static schema bound: the bundle knows the real one
    r = translate_client.post("/nlp/v1/translate",
                              json={"text": "A dog.", **PAIR, "max_new_tokens": over})
    assert r.status_code == 422 and r.json()["error"]["field"] == "max_new_tokens", r.text
    ok = translate_client.post("/nlp/v1/translate",
                               json={"text": "A dog.", **PAIR, "max_new_tokens": 8.0})
    assert ok.status_code == 200, ok.text


def test_a_text_without_a_sentence_translates_to_nothing(translator, translate_client):
    # "\x1f" passes the predictor's own checks (library and batch rows) but leaves the sentence
    # splitter nothing: a KeyError (in a list) or an IndexError (alone), a 500 over REST (fuzz
    # seeds 2 and 8). Over REST the schema now calls it blank (422).
    alone, pair = translator.predict([{"text": "\x1f", **PAIR}]), translator.predict(
        [{"text": "A dog.", **PAIR}, {"text": "\x1d", **PAIR}])
    for empty in (alone[0], pair[1]):
        assert (empty["translation"], empty["segments"], empty["truncated"]) == ("", 0, False)
    assert pair[0]["segments"] == 1
    r = translate_client.post("/nlp/v1/translate", json={"text": "\x1f", **PAIR})
    assert r.status_code == 422 and r.json()["error"]["field"] == "text"
