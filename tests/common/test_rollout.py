"""Shadow and canary of the `candidate` bundle through the real app (toy vertical)."""

from __future__ import annotations

import re
import time

import pytest
import torch
from fastapi.testclient import TestClient

from common.aliases import get_rollout, promote, set_alias, set_rollout
from common.artifacts import BundleWriter, fingerprint
from common.cli import main
from common.errors import InvalidInput, NotFound
from common.registry import get_vertical
from common.serving.app import create_app
from common.serving.prom import render
from common.serving.rollout import agreement, bucket
from tests.common.toy_vertical import make_net


def _other_bundle(root) -> str:
    """A toy bundle whose weights differ from the default one (a retrained candidate)."""
    net = make_net()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    w = BundleWriter(root, "toy", "toy-mlp")
    w.save_weights(net.state_dict())
    return w.publish("tests.common.toy_vertical.make_net", {"in": 4},
                     data_fingerprint=fingerprint("toy: candidate")).version


@pytest.fixture()
def store(tmp_path):
    prod = get_vertical("toy").train_default(tmp_path).version
    cand = _other_bundle(tmp_path)
    set_alias(tmp_path, "toy", prod, "production")
    set_alias(tmp_path, "toy", cand, "candidate")
    return tmp_path, prod, cand


def _sample(name: str, **labels: str) -> float:
    total = 0.0
    for line in render()[0].decode().splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _post(client, i: int, key: str | None = None):
    headers = {"X-Routing-Key": key} if key else {}
    r = client.post("/toy/v1/predict", json={"x": [i / 7, 1.0, -0.5, 2.0]}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.slow
def test_canary_share_and_stickiness(store):
    root, prod, cand = store
    set_rollout(root, "toy", canary=0.2)
    app = create_app(["toy"], root=root, alias_poll_s=0)
    with TestClient(app) as client:
        client.portal.call(app.state.follower.check_once)
        keys = [f"user-{i}" for i in range(2000)]
        first = {k: _post(client, i, k)["model_version"] for i, k in enumerate(keys)}
        share = sum(v == cand for v in first.values()) / len(first)
        assert abs(share - 0.2) <= 0.03, share
        # the same caller always gets the same model, and the bucket decides which
        again = {k: _post(client, i + 1, k)["model_version"] for i, k in enumerate(keys[:300])}
        assert all(again[k] == first[k] for k in again)
        assert all((first[k] == cand) == (bucket(f"toy:{k}") < 0.2) for k in keys)
        # no routing key: production
        assert {_post(client, i)["model_version"] for i in range(20)} == {prod}
        # request counters carry the version
        assert _sample("verticals_model_requests_total", model="toy", version=cand) == sum(
            v == cand for v in first.values()) + sum(v == cand for v in again.values())


def test_shadow_never_changes_an_answer_and_reports_agreement(store, monkeypatch):
    monkeypatch.setenv("VERTICALS_SHADOW_CPU_SHARE", "1.0")  # compare every request here
    root, prod, cand = store
    plain = create_app(["toy"], root=root, alias_poll_s=0)
    with TestClient(plain) as client:
        expected = [_post(client, i) for i in range(200)]
    set_rollout(root, "toy", shadow=1.0)
    app = create_app(["toy"], root=root, alias_poll_s=0)
    compared0 = _sample("verticals_shadow_compared_total", model="toy", candidate=cand)
    with TestClient(app) as client:
        client.portal.call(app.state.follower.check_once)
        assert app.state.follower.rollouts["toy"].shadow is not None
        got = [_post(client, i) for i in range(200)]
        assert got == expected  # production answers, value by value
        shadow = app.state.follower.rollouts["toy"].shadow
        assert shadow.drain(30)
        # a shadow process that dies is started again at the next poll
        shadow._proc.kill()
        t_end = time.monotonic() + 10
        while not shadow.dead and time.monotonic() < t_end:
            time.sleep(0.05)
        assert shadow.dead
        client.portal.call(app.state.follower.check_once)
        again = app.state.follower.rollouts["toy"].shadow
        assert again is not shadow and again.mode == "process" and again._proc.poll() is None
    compared = _sample("verticals_shadow_compared_total", model="toy", candidate=cand) - compared0
    skipped = _sample("verticals_shadow_skipped_total", model="toy")
    assert compared + skipped >= 200 and compared > 0
    agree = _sample("verticals_shadow_agreement_total", model="toy", candidate=cand,
                    metric="label_agreement")
    delta = _sample("verticals_shadow_agreement_total", model="toy", candidate=cand,
                    metric="abs_delta_p")
    assert 0 <= agree <= compared and delta > 0  # the candidate's weights differ


def test_promote_turns_the_rollout_off_and_swaps(store):
    root, prod, cand = store
    set_rollout(root, "toy", shadow=0.5, canary=0.5)
    app = create_app(["toy"], root=root, alias_poll_s=0)
    with TestClient(app) as client:
        follower = app.state.follower
        client.portal.call(follower.check_once)
        assert "toy" in follower.rollouts
        shadow_proc = follower.rollouts["toy"].shadow._proc
        assert shadow_proc.poll() is None  # the shadow's own process is up
        promote(root, "toy", reason="canary clean")
        assert get_rollout(root, "toy") == {}
        assert client.portal.call(follower.check_once) == ["toy"]
        assert "toy" not in follower.rollouts
        assert shadow_proc.poll() is not None  # shadow off: its process has exited
        assert {_post(client, i, f"k{i}")["model_version"] for i in range(50)} == {cand}


def test_rollout_bad_input(store, capsys):
    root, prod, cand = store
    with pytest.raises(InvalidInput, match="shadow: must be a fraction"):
        set_rollout(root, "toy", shadow=1.5)
    with pytest.raises(InvalidInput, match="key"):
        set_rollout(root, "toy", canary=0.1, key="bad key!")
    promote(root, "toy")  # no candidate any more
    with pytest.raises(NotFound, match="no 'candidate' alias"):
        set_rollout(root, "toy", canary=0.1)
    assert main(["models", "rollout", "toy", "--canary", "0.1", "--root", str(root)]) == 2
    assert re.match(r"error: toy has no 'candidate' alias", capsys.readouterr().err)
    assert main(["models", "rollout", "toy", "--off", "--root", str(root)]) == 0
    assert capsys.readouterr().out.strip() == "toy: shadow and canary off"


def test_agreement_reads_what_each_answer_carries():
    from fraud_detection.schemas import Score
    from nlp.translation_predictor import TranslationResponse
    from recommender.schemas import RecommendResponse

    def rec(ids):
        return RecommendResponse(user_id="u", items=[{"item_id": i, "score": 1.0} for i in ids],
                                 model="ease", model_version="v")

    assert agreement(rec(["a", "b", "c", "d"]), rec(["b", "a", "x", "y"])) == {
        "overlap_at_k": 0.5}
    f = Score(transaction_id=1, probability=0.9, decision="block", reasons=[], model_version="v")
    g = Score(transaction_id=1, probability=0.6, decision="review", reasons=[], model_version="w")
    assert agreement(f, g) == pytest.approx({"decision_agreement": 0.0, "abs_delta_p": 0.3})
    fields = {"source_lang": "en", "target_lang": "de", "model_version": "v", "segments": 1,
              "truncated": False}
    t = TranslationResponse(translation="Ein Hund läuft.", **fields)
    same = agreement(t, TranslationResponse(translation="Ein Hund läuft.", **fields))
    other = agreement(t, TranslationResponse(translation="Eine Katze schläft.", **fields))
    assert same["chrf"] == pytest.approx(100.0) and other["chrf"] < 50


def test_shadow_past_its_cpu_budget_samples_less(store):
    root, prod, cand = store
    from common.serving.rollout import ShadowRunner
    from tests.common.toy_vertical import ToyPredictor

    primary = ToyPredictor.load(root / "toy" / prod)
    runner = ShadowRunner("toy", ToyPredictor.load(root / "toy" / cand), 1.0, cpu_share=0.0)
    runner._window_cpu = 1.0  # as if the shadow had just used its whole second
    before = _sample("verticals_shadow_skipped_total", model="toy", reason="budget")
    requests = [primary.parse({"x": [i, 0.0, 0.0, 1.0]}) for i in range(8)]
    primary.run_each(requests, shadow=runner)
    after = _sample("verticals_shadow_skipped_total", model="toy", reason="budget")
    assert after - before == 8
    runner.close()


# ---- the shadow's own process (common/serving/shadow_proc.py) ----------------------------------
def _feed(primary, runners, batches) -> None:
    """The same batches through each runner, waiting for each to compare before the next."""
    for reqs in batches:
        for r in runners:
            primary.run_each(reqs, shadow=r)
            assert r.drain(30)


def _sums(name: str, version: str) -> dict[str, float]:
    out = {m: _sample("verticals_shadow_agreement_total", model=name, candidate=version,
                      metric=m) for m in ("label_agreement", "decision_agreement", "abs_delta_p")}
    out["compared"] = _sample("verticals_shadow_compared_total", model=name, candidate=version)
    return out


def test_shadow_process_and_thread_give_identical_numbers(store):
    from common.serving.rollout import ShadowRunner
    from common.serving.shadow_proc import ShadowProcess
    from tests.common.toy_vertical import ToyPredictor

    root, prod, cand = store
    primary = ToyPredictor.load(root / "toy" / prod)
    candidate = ToyPredictor.load(root / "toy" / cand)
    proc = ShadowProcess("toy-proc", candidate, 1.0)
    thread = ShadowRunner("toy-thread", candidate, 1.0, cpu_share=1.0)
    try:
        assert proc.wait_ready(60) and proc.mode == "process"
        batches = [[primary.parse({"x": [i / 7 + b, 1.0, -0.5, 2.0]}) for i in range(1 + b)]
                   for b in range(12)]
        _feed(primary, [proc, thread], batches)
        got, want = _sums("toy-proc", cand), _sums("toy-thread", cand)
        assert got == want and got["compared"] == sum(len(b) for b in batches)
        assert got["abs_delta_p"] > 0  # the candidate's weights differ
        child = proc._proc
    finally:
        proc.close()
        thread.close()
    assert child.poll() is not None  # close() waits for the child to exit


def test_shadow_falls_back_to_a_thread_when_its_process_cannot_load(store, tmp_path, caplog):
    import shutil

    from common.serving.shadow_proc import ShadowProcess
    from tests.common.toy_vertical import ToyPredictor

    root, prod, cand = store
    primary = ToyPredictor.load(root / "toy" / prod)
    gone = tmp_path / "gone" / cand
    shutil.copytree(root / "toy" / cand, gone)
    candidate = ToyPredictor.load(gone)
    shutil.rmtree(gone)  # the child cannot load what the server loaded
    with caplog.at_level("WARNING"):
        proc = ShadowProcess("toy-fallback", candidate, 1.0, cpu_share=1.0)
        try:
            assert proc.wait_ready(60) and proc.mode == "thread"
            _feed(primary, [proc], [[primary.parse({"x": [i, 0.0, 0.0, 1.0]}) for i in range(5)]])
        finally:
            proc.close()
    assert caplog.text.count("runs in-thread") == 1 and "cannot load the candidate" in caplog.text
    assert _sample("verticals_shadow_compared_total", model="toy-fallback") == 5


def test_prepared_inputs_cross_as_raw_bytes():
    import numpy as np

    from common.serving.shadow_proc import _frame, _unframe, pack, unpack

    x = np.arange(12, dtype=np.float64).reshape(3, 4)[:, 1:]  # not contiguous
    tree = (x, [7, 8, 9], {"t": torch.ones(2, dtype=torch.int32), "s": "a", "n": None})
    back = unpack(_unframe(memoryview(_frame(pack(tree)))))
    assert isinstance(back, tuple) and back[1] == [7, 8, 9] and back[2]["s"] == "a"
    np.testing.assert_array_equal(back[0], x)
    np.testing.assert_array_equal(back[2]["t"], np.ones(2, dtype=np.int32))
    with pytest.raises(TypeError, match="object"):
        pack(np.array([object()]))
    with pytest.raises(TypeError, match="set"):
        pack({1, 2})


@pytest.mark.slow
def test_fraud_shadow_process_scores_production_features_like_the_thread(tmp_path):
    """The stateful path: production's prepared feature rows cross as raw bytes, and the
    candidate never records a transaction. The candidate is the production bundle itself: any
    row garbled on the way would show as a |delta p| above 0."""
    from common.serving.rollout import ShadowRunner
    from common.serving.shadow_proc import ShadowProcess
    from fraud_detection.bundle import train_and_publish
    from fraud_detection.predictor import FraudPredictor
    from fraud_detection.vertical import simulated

    bundle = train_and_publish(simulated("test"), tmp_path, xgb_params={"n_estimators": 20})
    primary, candidate = FraudPredictor.load(bundle.path), FraudPredictor.load(bundle.path)
    proc = ShadowProcess("fraud-proc", candidate, 1.0)
    thread = ShadowRunner("fraud-thread", candidate, 1.0, cpu_share=1.0)
    txs = [{"transaction_id": 90_000_000 + i, "timestamp": f"2018-10-01T09:{i:02d}:00",
            "customer_id": i % 5, "terminal_id": 3 + i % 4, "amount": 10.0 + 13 * (i % 7)}
           for i in range(40)]
    batches = [[primary.parse(t) for t in txs[i : i + 8]] for i in range(0, 40, 8)]
    try:
        assert proc.wait_ready(90) and proc.mode == "process"
        before = len(primary.store.snapshot())
        _feed(primary, [proc], batches)
        assert len(primary.store.snapshot()) == before + 40  # each transaction recorded once
        replay = FraudPredictor.load(bundle.path)  # production's batches again, same rows
        _feed(replay, [thread], batches)
    finally:
        proc.close()
        thread.close()
    got, want = _sums("fraud-proc", bundle.version), _sums("fraud-thread", bundle.version)
    assert got == want
    assert got["compared"] == got["decision_agreement"] == 40 and got["abs_delta_p"] == 0
