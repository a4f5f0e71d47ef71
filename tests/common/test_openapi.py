"""The OpenAPI document says what the server does (findings of the Schemathesis fuzz, issue 14):
one error schema for every error status, /metrics as text/plain, 401/403 and security schemes
exactly when API keys are on, 413/422 on every body, and an unparsable body is a 422 in the
error shape, not an undocumented 400."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from common.serving import create_app

ERROR_REF = "#/components/schemas/ErrorResponse"


@pytest.fixture()
def doc_and_client(toy_root):
    with TestClient(create_app(["toy"], root=toy_root, api_key="k1")) as client:
        yield client.get("/openapi.json", headers={"X-API-Key": "k1"}).json(), client


def operations(doc):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            yield path, method, op


def test_every_error_status_uses_the_one_error_schema(doc_and_client):
    doc, _ = doc_and_client
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    seen = 0
    for _, _, op in operations(doc):
        for status, resp in op["responses"].items():
            if int(status) >= 400:
                seen += 1
                assert resp["content"]["application/json"]["schema"] == {"$ref": ERROR_REF}
    assert seen >= 8
    err = doc["components"]["schemas"]["ErrorResponse"]
    assert set(err["required"]) == {"error", "request_id"}


def test_metrics_is_documented_as_prometheus_text(doc_and_client):
    doc, client = doc_and_client
    content = doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(content) == ["text/plain"]
    r = client.get("/metrics", headers={"X-API-Key": "k1"})
    assert r.headers["content-type"].startswith("text/plain")


def test_auth_is_documented_on_every_route_but_the_probes(doc_and_client):
    doc, _ = doc_and_client
    assert set(doc["components"]["securitySchemes"]) == {"ApiKeyHeader", "BearerAuth"}
    for path, _, op in operations(doc):
        if path in ("/livez", "/readyz"):
            assert "security" not in op and "401" not in op["responses"]
        else:
            assert op["security"] and {"401", "403"} <= set(op["responses"])


def test_no_auth_documented_when_no_key_is_configured(toy_root, monkeypatch):
    monkeypatch.delenv("VERTICALS_API_KEY", raising=False)
    monkeypatch.delenv("VERTICALS_API_KEYS_FILE", raising=False)
    doc = create_app(["toy"], root=toy_root).openapi()
    assert "securitySchemes" not in doc["components"]
    assert all("401" not in op["responses"] for _, _, op in operations(doc))


def test_bodies_document_413_and_422_and_ops_their_models(doc_and_client):
    doc, _ = doc_and_client
    predict = doc["paths"]["/toy/v1/predict"]["post"]
    assert {"413", "422"} <= set(predict["responses"])
    ready = doc["paths"]["/readyz"]["get"]["responses"]
    assert set(ready) == {"200", "503"} and "Retry-After" in ready["503"]["headers"]
    models = doc["paths"]["/v1/models"]["get"]["responses"]["200"]["content"]
    assert models["application/json"]["schema"] == {"$ref": "#/components/schemas/ModelsResponse"}


def test_an_unparsable_body_is_a_422_in_the_error_shape(doc_and_client):
    _, client = doc_and_client
    # not UTF-8: FastAPI answers its own 400 "There was an error parsing the body"
    r = client.post("/toy/v1/predict", content=b"\xff\xfe\x00",
                    headers={"X-API-Key": "k1", "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_input"
    assert r.json()["error"]["field"] == "body"
