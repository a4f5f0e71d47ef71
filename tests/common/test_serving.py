"""Serving core: dynamic batching, bounded queue, deadlines, drain, and the HTTP contract
(auth, body limit, error shape, readiness, metrics) on the toy vertical."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from common.errors import DeadlineExceeded, Overloaded
from common.serving import ServedPredictor, create_app
from tests.common.toy_vertical import ToyPredictor, ToyRequest


def load(root, **options) -> ToyPredictor:
    return ToyPredictor.load("latest", root=root, **options)


def req(i: int) -> ToyRequest:
    return ToyRequest(x=[i / 10, 0.2, -0.3, 0.4])


def test_concurrent_requests_are_batched_and_match_single_calls(toy_root):
    p = load(toy_root)
    single = [p.run([req(i)])[0] for i in range(20)]
    ToyPredictor.calls.clear()

    async def main():
        s = ServedPredictor(p, max_batch_size=8, max_wait_ms=20)
        await s.start()
        out = await asyncio.gather(*(s.predict(req(i)) for i in range(20)))
        await s.stop()
        return out

    out = asyncio.run(main())
    assert out == single
    assert max(ToyPredictor.calls) > 1 and max(ToyPredictor.calls) <= 8
    assert sum(ToyPredictor.calls) == 20


def test_full_queue_is_overloaded(toy_root):
    p = load(toy_root, delay_s=0.3)

    async def main():
        s = ServedPredictor(p, max_batch_size=1, max_wait_ms=0, max_queue=2)
        await s.start()
        first = asyncio.create_task(s.predict(req(0)))
        await asyncio.sleep(0.05)  # the worker has taken `first` off the queue
        queued = [asyncio.create_task(s.predict(req(i))) for i in (1, 2)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await s.predict(req(3))
        await asyncio.gather(first, *queued)
        await s.stop()

    asyncio.run(main())


def test_expired_request_never_reaches_the_model(toy_root):
    p = load(toy_root, delay_s=0.3)
    ToyPredictor.calls.clear()

    async def main():
        s = ServedPredictor(p, max_batch_size=4, max_wait_ms=0)
        await s.start()
        slow = asyncio.create_task(s.predict(req(0)))
        await asyncio.sleep(0.05)
        with pytest.raises(DeadlineExceeded):
            await s.predict(req(1), timeout_s=0.05)  # waits behind `slow`, expires in queue
        await slow
        await asyncio.sleep(0.05)
        await s.stop()

    asyncio.run(main())
    assert ToyPredictor.calls == [1]  # only `slow` was ever run


def test_a_request_in_a_batch_is_answered_even_past_its_deadline(toy_root):
    """504 means the model never saw the request; one already running gets its answer."""
    p = load(toy_root, delay_s=0.3)

    async def main():
        s = ServedPredictor(p, max_batch_size=4, max_wait_ms=0)
        await s.start()
        out = await s.predict(req(0), timeout_s=0.1)  # the batch takes 0.3 s
        await s.stop()
        return out

    assert asyncio.run(main()).label in (0, 1)


def test_admission_refuses_what_the_queue_cannot_answer_in_time(toy_root):
    """Once the model time per item is known, a request the queue ahead would keep past its
    share of the deadline is refused at once (503), before it reaches the queue or the model;
    the middleware asks the same question before reading a body (`shed_reason`)."""
    p = load(toy_root, delay_s=0.1)
    ToyPredictor.calls.clear()

    async def main():
        s = ServedPredictor(p, max_batch_size=1, max_wait_ms=0)
        await s.start()
        await s.predict(req(0))  # learns ~0.1 s per item
        assert s.shed_reason(1.0) is None
        tasks = [asyncio.create_task(s.predict(req(i), timeout_s=5.0)) for i in range(1, 4)]
        await asyncio.sleep(0)  # all three queued (one may already be running)
        with pytest.raises(Overloaded, match="would not answer within the deadline of 0.5 s"):
            await s.predict(req(9), timeout_s=0.5)  # >= 2 ahead x 0.1 s > 0.3 x 0.5 s
        assert "overloaded" in s.shed_reason(0.5)
        assert s.shed_reason(30.0) is None
        await asyncio.gather(*tasks)
        await s.stop()

    asyncio.run(main())
    assert sum(ToyPredictor.calls) == 4  # the refused request never ran


def test_stop_drains_queued_requests(toy_root):
    p = load(toy_root, delay_s=0.05)

    async def main():
        s = ServedPredictor(p, max_batch_size=2, max_wait_ms=0)
        await s.start()
        tasks = [asyncio.create_task(s.predict(req(i))) for i in range(6)]
        await asyncio.sleep(0.01)
        await s.stop(drain=True)
        return await asyncio.gather(*tasks)

    assert len(asyncio.run(main())) == 6


@pytest.fixture()
def client(toy_root):
    app = create_app(["toy"], root=toy_root, api_key="secret", max_body_bytes=2048)
    with TestClient(app) as c:
        yield c


AUTH = {"X-API-Key": "secret"}


def assert_error(resp, status: int, code: str, field=None):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error", "request_id"}
    assert body["error"]["code"] == code and body["error"]["field"] == field
    assert body["request_id"] == resp.headers["x-request-id"]


def test_auth_on_every_route_but_probes(client):
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200
    for method, path in [("GET", "/metrics"), ("GET", "/v1/models"), ("POST", "/toy/v1/predict"),
                         ("GET", "/docs")]:
        assert_error(client.request(method, path), 401, "unauthorized", "X-API-Key")
    ok = client.post("/toy/v1/predict", json={"x": [1, 2, 3, 4]},
                     headers={"Authorization": "Bearer secret"})
    assert ok.status_code == 200 and set(ok.json()) == {"label", "probability", "model_version"}
    assert_error(client.get("/v1/models", headers={"X-API-Key": "wrong"}), 403, "forbidden",
                 "X-API-Key")


def test_errors_have_one_shape(client):
    assert_error(client.post("/toy/v1/predict", json={"x": [1, 2]}, headers=AUTH), 422,
                 "invalid_input", "x")
    assert_error(client.post("/toy/v1/predict", json={"x": [1, 2, 3, 4], "z": 1}, headers=AUTH),
                 422, "invalid_input", "z")
    assert_error(client.post("/toy/v1/predict", content=b"{not json", headers={
        **AUTH, "content-type": "application/json"}), 422, "invalid_input", "body")
    assert_error(client.get("/nowhere", headers=AUTH), 404, "not_found")
    assert_error(client.post("/toy/v1/predict", content=b"x" * 4096, headers=AUTH), 413,
                 "payload_too_large", "body")


def test_request_id_is_echoed(client):
    r = client.get("/livez", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"


def test_models_and_metrics(client):
    for _ in range(3):
        client.post("/toy/v1/predict", json={"x": [1, 2, 3, 4]}, headers=AUTH)
    models = client.get("/v1/models", headers=AUTH).json()["models"]
    assert models[0]["vertical"] == "toy" and len(models[0]["sha256"]) == 64
    text = client.get("/metrics", headers=AUTH).text
    line = [ln for ln in text.splitlines() if ln.startswith("verticals_requests_total{")
            and 'route="/toy/v1/predict"' in ln and 'status="200"' in ln]
    assert line and float(line[0].split()[-1]) >= 3
    assert "verticals_batch_size_bucket" in text and "verticals_queue_depth" in text


def test_readyz_false_when_a_model_cannot_load(tmp_path):
    app = create_app(["toy"], root=tmp_path)  # no bundle there
    with TestClient(app) as c:
        assert c.get("/livez").status_code == 200
        r = c.get("/readyz")
        assert_error(r, 503, "not_ready")
        assert "verticals train toy" in r.json()["error"]["message"]
        assert_error(c.post("/toy/v1/predict", json={"x": [1, 2, 3, 4]}), 503, "not_ready")


def test_request_is_counted_before_its_response_is_complete():
    """A scrape made as soon as a client has its response must count that response: the
    counter moves before the last body chunk is handed to the server."""
    from common.serving.middleware import ServingMiddleware
    from common.serving.prom import REQUESTS

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    counter = REQUESTS.labels("/count-me", "GET", "200")
    seen_at_last_chunk = []

    async def send(message):
        if message["type"] == "http.response.body" and not message.get("more_body"):
            seen_at_last_chunk.append(counter._value.get())

    async def receive():
        return {"type": "http.request", "body": b""}

    before = counter._value.get()
    scope = {"type": "http", "path": "/count-me", "method": "GET", "headers": []}
    asyncio.run(ServingMiddleware(app, None, 1024)(scope, receive, send))
    assert seen_at_last_chunk == [before + 1]
    assert counter._value.get() == before + 1  # counted once, not again on the way out
