"""The server follows the `production` alias: swaps verified bundles, refuses broken ones."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from common.aliases import set_alias
from common.artifacts import WEIGHTS
from common.registry import get_vertical
from common.serving.app import create_app
from common.serving.prom import render
from tests.common.toy_vertical import ToyPredictor


def _versions(client: TestClient, n: int = 5) -> set[str]:
    out = set()
    for i in range(n):
        r = client.post("/toy/v1/predict", json={"x": [i, 1.0, 2.0, 3.0]})
        assert r.status_code == 200, r.text
        out.add(r.json()["model_version"])
    return out


def _metric(name: str, **labels: str) -> float:
    text = render()[0].decode()
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{want}}} not exported")


@pytest.fixture()
def store(tmp_path):
    toy = get_vertical("toy")
    return tmp_path, [toy.train_default(tmp_path).version for _ in range(3)]


def test_serve_prefers_production_then_follows_it(store):
    root, (v1, v2, v3) = store
    set_alias(root, "toy", v1, "production")
    app = create_app(["toy"], root=root, alias_poll_s=0)  # polls driven by the test
    follower = app.state.follower
    with TestClient(app) as client:
        assert _versions(client) == {v1}  # production, not the latest (v3)
        assert client.portal.call(follower.check_once) == []  # nothing moved
        set_alias(root, "toy", v2, "production")
        ToyPredictor.calls.clear()
        swapped = client.portal.call(follower.check_once)
        assert ToyPredictor.calls == [1]  # warmed up on the vertical's example, off requests
        assert swapped == ["toy"] and _versions(client) == {v2}
        assert _metric("verticals_model_swaps_total", model="toy", outcome="swapped") >= 1
        assert _metric("verticals_model_version_info", model="toy", version=v2) == 1
        assert _metric("verticals_model_version_info", model="toy", version=v1) == 0


def test_broken_bundle_is_refused_and_old_model_keeps_serving(store, caplog):
    root, (v1, v2, v3) = store
    set_alias(root, "toy", v1, "production")
    app = create_app(["toy"], root=root, alias_poll_s=0)
    follower = app.state.follower
    with TestClient(app) as client:
        refused0 = _metric_or_zero("toy", "refused")
        set_alias(root, "toy", v3, "production")
        (root / "toy" / v3 / WEIGHTS).write_bytes(b"bit rot")  # corrupted after the move
        with caplog.at_level("ERROR"):
            assert client.portal.call(follower.check_once) == []
        assert f"refused bundle {v3}" in caplog.text and "checksum mismatch" in caplog.text
        assert _versions(client) == {v1}
        assert client.get("/readyz").status_code == 200
        assert _metric_or_zero("toy", "refused") == refused0 + 1
        # the same broken target is not reloaded at every poll
        assert client.portal.call(follower.check_once) == []
        assert _metric_or_zero("toy", "refused") == refused0 + 1
        # moving on to a good bundle swaps again
        set_alias(root, "toy", v2, "production")
        assert client.portal.call(follower.check_once) == ["toy"]
        assert _versions(client) == {v2}


def test_pinned_bundles_are_not_followed(store):
    root, (v1, v2, _) = store
    app = create_app(["toy"], root=root, bundles={"toy": root / "toy" / v1}, alias_poll_s=0)
    with TestClient(app) as client:
        set_alias(root, "toy", v2, "production")
        assert client.portal.call(app.state.follower.check_once) == []
        assert _versions(client) == {v1}


def _metric_or_zero(model: str, outcome: str) -> float:
    try:
        return _metric("verticals_model_swaps_total", model=model, outcome=outcome)
    except AssertionError:
        return 0.0
