"""The medical route judges its JSON and multipart bodies exactly as the OpenAPI document
describes them (findings of the Schemathesis fuzz, issue 14): an empty image is refused by the
schema too, an empty body is a documented 422, and form fields are as strict as JSON ones."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from fastapi.testclient import TestClient

from common.serving import create_app
from tests.medical.files import png_bytes

URL = "/medical/v1/predict"
PNG = png_bytes(np.random.default_rng(0).integers(0, 256, (16, 16), dtype=np.uint8))


@pytest.fixture(scope="module")
def client(predictor):
    with TestClient(create_app(predictors={"medical": predictor})) as c:
        yield c


def test_empty_image_is_refused_by_schema_and_server(client):
    schema = client.get("/openapi.json").json()["paths"][URL]["post"]["requestBody"]["content"]
    assert schema["application/json"]["schema"]["properties"]["image_base64"]["minLength"] == 1
    r = client.post(URL, json={"image_base64": ""})
    assert r.status_code == 422 and r.json()["error"]["field"] == "image_base64"


def test_an_empty_body_is_a_documented_422(client):
    responses = client.get("/openapi.json").json()["paths"][URL]["post"]["responses"]
    assert {"200", "413", "422", "503", "504"} <= set(responses)
    for kw in ({}, {"files": {}, "data": {"heatmap": "true"}}):
        r = client.post(URL, **kw)
        assert r.status_code == 422, r.text


@pytest.mark.parametrize("change, field", [({"heatmap": "true"}, "heatmap"),
                                           ({"heatmap": 1}, "heatmap"),
                                           ({"abstain_threshold": "0.5"}, "abstain_threshold"),
                                           ({"abstain_threshold": True}, "abstain_threshold")])
def test_json_fields_are_not_coerced(client, change, field):
    r = client.post(URL, json={"image_base64": base64.b64encode(PNG).decode(), **change})
    assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text


@pytest.mark.parametrize("data, status, field", [
    ({"heatmap": "true"}, 200, None),
    ({"heatmap": "false", "abstain_threshold": "0.25"}, 200, None),
    ({"heatmap": "yes"}, 422, "heatmap"),            # was read as false and answered 200
    ({"abstain_threshold": "half"}, 422, "abstain_threshold"),
    ({"colour": "red"}, 422, "colour"),              # unknown fields: additionalProperties false
])
def test_multipart_fields_are_as_strict_as_the_schema(client, data, status, field):
    r = client.post(URL, files={"file": ("scan.png", PNG, "image/png")}, data=data)
    assert r.status_code == status, r.text
    if field:
        assert r.json()["error"]["field"] == field


def test_two_files_are_refused(client):
    r = client.post(URL, files=[("file", ("a.png", PNG)), ("file", ("b.png", PNG))])
    assert r.status_code == 422 and r.json()["error"]["field"] == "file"
