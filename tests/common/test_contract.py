"""Contract tests over every registered vertical (as timm does over every model): schema
round-trip, predict_batch of N == N single calls, REST answer == Predictor answer == batch-job
answer for the same request, /readyz after setup. Each path gets a fresh predictor loaded from
the same bundle, so stateful verticals (feature stores, seen-filters) are compared fairly."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from common.artifacts import load_bundle
from common.batch import score_file
from common.batch_io import flatten
from common.registry import get_vertical, list_verticals
from common.serving import create_app
from tests.close import same_answer

VERTICALS = list_verticals()


@pytest.fixture(scope="module", params=VERTICALS)
def trained(request, tmp_path_factory):
    name = request.param
    root = tmp_path_factory.mktemp(f"contract-{name}")
    bundle = get_vertical(name).train_default(root, preset="test")
    return name, root, bundle


def fresh(name, root):
    return get_vertical(name).predictor_cls.load("latest", root=root)


def test_bundle_is_complete(trained):
    name, root, bundle = trained
    b = load_bundle("latest", vertical=name, root=root)
    assert b.path == bundle.path and b.manifest["vertical"] == name
    assert b.manifest["data_fingerprint"], "bundles record what data trained them"


def test_examples_round_trip_through_the_schema(trained):
    name, root, _ = trained
    p = fresh(name, root)
    examples = get_vertical(name).example_requests()
    assert examples, "a vertical must give at least one example request"
    for ex in examples:
        req = p.parse(ex.payload)
        assert p.parse(req.model_dump(mode="json")) == req
        out = p.predict([ex.payload])[0]
        assert p.response_model.model_validate(out).model_dump(mode="json") == out


def test_batch_of_n_equals_n_single_calls(trained):
    name, root, _ = trained
    payloads = [ex.payload for ex in get_vertical(name).example_requests()] * 2
    batched = fresh(name, root).predict(payloads)
    one_by_one = fresh(name, root)
    singles = [one_by_one.predict([p])[0] for p in payloads]
    assert same_answer(batched, singles), (batched, singles)


def test_rest_equals_predictor_equals_batch_job(trained, tmp_path):
    name, root, _ = trained
    examples = get_vertical(name).example_requests()
    expected = fresh(name, root).predict([ex.payload for ex in examples])
    with TestClient(create_app([name], root=root)) as client:
        assert client.get("/readyz").json()["ready"] is True
        for ex, want in zip(examples, expected, strict=True):
            r = client.request(ex.method, ex.path, json=ex.body, params=ex.params)
            assert r.status_code == 200, r.text
            assert r.json() == want
    src = tmp_path / "requests.jsonl"
    src.write_text("".join(json.dumps(ex.payload) + "\n" for ex in examples))
    s = score_file(name, src, tmp_path / "out.parquet", root=root, chunk_size=2)
    assert (s["read"], s["scored"], s["rejected"]) == (len(examples), len(examples), 0)
    rows = pd.read_parquet(tmp_path / "out.parquet").drop(columns="row")
    got = [{k: v for k, v in r.items() if not (isinstance(v, float) and v != v)}
           for r in rows.to_dict("records")]
    want_rows = [{k: v for k, v in flatten(w).items() if v is not None} for w in expected]
    assert [{k: v for k, v in g.items() if v is not None} for g in got] == want_rows
