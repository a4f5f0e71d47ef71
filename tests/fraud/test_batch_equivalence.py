"""Fraud batch answers never depend on the engine, the chunk size, the Ray actor count or an
interruption, and a clean run answers as the API replaying the same transactions in order.

Every comparison is exact: the features are the same integer aggregates and float operations
whichever run computes them, and the model sees the same feature rows in the same chunks."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import common.batch
from common.batch import score_file
from common.registry import get_vertical
from fraud_detection.data import SimConfig, simulate
from fraud_detection.predictor import FraudPredictor

ROOT = Path(__file__).resolve().parents[2]
CHUNK = 300


@pytest.fixture(scope="module")
def days(tmp_path_factory) -> Path:
    """~1,200 transactions over the 4 days after the bundle's data: 150 cards on 140 terminals,
    so most rows have card and terminal history from the job itself and from the bundle."""
    df = simulate(SimConfig(n_customers=200, n_terminals=200, n_days=4, start_date="2018-10-01",
                            compromised_terminals_per_day=1, compromised_customers_per_day=1),
                  seed=5)
    df["TRANSACTION_ID"] += 95_000_000  # beyond the bundle's ids
    src = tmp_path_factory.mktemp("fraud-days") / "days.parquet"
    df.sample(frac=1.0, random_state=1).to_parquet(src)  # the job sorts by time itself
    return src


def scores(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out).sort_values("row").reset_index(drop=True)


@pytest.fixture(scope="module")
def clean(days, fraud_root, tmp_path_factory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("clean") / "clean.parquet"
    s = score_file("fraud", days, out, root=fraud_root, chunk_size=CHUNK)
    assert s["read"] == s["scored"] > 3 * CHUNK and s["rejected"] == 0
    return scores(out)


class Killed(Exception):
    pass


def crash_after_first_chunk(monkeypatch):
    """What a kill after the first chunk leaves: its part file on disk, the process gone (the
    rerun loads a fresh predictor, so no in-memory history survives)."""
    real = common.batch._write_atomic

    def write(df, rejects, parts, idx):
        if idx > 0:
            raise Killed(f"killed before chunk {idx} was written")
        real(df, rejects, parts, idx)

    monkeypatch.setattr(common.batch, "_write_atomic", write)


def test_clean_run_answers_as_the_api_replay_in_time_order(days, clean, fraud_root):
    df = pd.read_parquet(days).sort_values(["TX_DATETIME", "TRANSACTION_ID"])
    v = get_vertical("fraud")
    want = FraudPredictor.load("latest", root=fraud_root).predict(
        [v.row_to_payload(r, None) for r in df.to_dict("records")])
    got = clean.set_index("transaction_id").loc[[w["transaction_id"] for w in want]]
    assert got["probability"].tolist() == [w["probability"] for w in want]
    assert got["decision"].tolist() == [w["decision"] for w in want]
    assert got["reasons"].tolist() == [json.dumps(w["reasons"], sort_keys=True) for w in want]
    # not vacuous: history (job's and bundle's) shapes these answers
    assert (got["reasons"].str.contains("CARD_|TERMINAL_")).mean() > 0.5
    assert got["decision"].nunique() >= 2


def test_resumed_run_equals_clean_run(days, clean, fraud_root, tmp_path, monkeypatch):
    out = tmp_path / "resumed.parquet"
    crash_after_first_chunk(monkeypatch)
    with pytest.raises(Killed):
        score_file("fraud", days, out, root=fraud_root, chunk_size=CHUNK)
    assert len(list((tmp_path / "resumed.parquet.parts").glob("part-*.parquet"))) == 1
    monkeypatch.undo()
    s = score_file("fraud", days, out, root=fraud_root, chunk_size=CHUNK)
    assert s["resumed_chunks"] == 1 and s["scored"] == len(clean)
    pd.testing.assert_frame_equal(scores(out), clean, check_exact=True)


def test_chunk_size_does_not_change_answers(days, clean, fraud_root, tmp_path):
    out = tmp_path / "other.parquet"
    score_file("fraud", days, out, root=fraud_root, chunk_size=317)
    pd.testing.assert_frame_equal(scores(out), clean, check_exact=True)


def test_duplicates_and_ids_already_in_the_store(fraud_root, tmp_path):
    """An identical duplicate answers as its first copy (a retry); a reused id with other
    values is rejected naming the first row; an id the bundle's store already holds is
    replaced for the whole job, so the answers do not depend on which run recorded it."""
    p = FraudPredictor.load("latest", root=fraud_root)
    snap = p.store.snapshot()
    old = int(snap["TRANSACTION_ID"].iloc[-1])
    rows = [
        {"transaction_id": 91_000_001, "timestamp": "2018-10-01T08:00:00", "customer_id": 3,
         "terminal_id": 17, "amount": 40.0},
        {"transaction_id": 91_000_002, "timestamp": "2018-10-01T09:00:00", "customer_id": 3,
         "terminal_id": 17, "amount": 60.0},
        {"transaction_id": 91_000_001, "timestamp": "2018-10-01T08:00:00", "customer_id": 3,
         "terminal_id": 17, "amount": 40.0},
        {"transaction_id": 91_000_002, "timestamp": "2018-10-01T10:00:00", "customer_id": 3,
         "terminal_id": 17, "amount": 99.0},
        {"transaction_id": old, "timestamp": "2018-10-01T11:00:00", "customer_id": 3,
         "terminal_id": 17, "amount": 10.0},
        {"transaction_id": 91_000_003, "timestamp": "1969-12-31T23:59:59", "customer_id": 3,
         "terminal_id": 17, "amount": 10.0},
    ]
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = score_file("fraud", src, tmp_path / "o.parquet", root=fraud_root, chunk_size=2)
    assert (s["read"], s["scored"], s["rejected"]) == (6, 4, 2)
    got = scores(tmp_path / "o.parquet").set_index("row")
    assert got.loc[2].to_dict() == got.loc[0].to_dict()
    rejects = sorted((json.loads(x) for x in Path(s["rejects"]).read_text().splitlines()),
                     key=lambda r: r["row"])
    assert [(r["row"], r["field"]) for r in rejects] == [(3, "transaction_id"), (5, "timestamp")]
    assert "row 1" in rejects[0]["reason"]
    # the same answers as the API gives these rows in order, on a store without `old`
    api = FraudPredictor.load("latest", root=fraud_root)
    api.store.load(snap[snap["TRANSACTION_ID"] != old])
    want = api.predict([rows[i] for i in (0, 1, 4)])
    assert got.loc[[0, 1, 4], "probability"].tolist() == [w["probability"] for w in want]


@pytest.fixture()
def redis_server(tmp_path):
    """A real redis-server on a free loopback port, killed afterwards."""
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.time() + 10
    while True:
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.exceptions.ConnectionError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise
            time.sleep(0.05)
    yield url
    proc.kill()
    proc.wait()


@pytest.mark.slow  # ~15 s: each row is one Redis round trip when recorded
def test_resume_on_a_shared_redis_store(days, clean, fraud_root, tmp_path, monkeypatch,
                                        redis_server):
    """With Redis the first run records the job's rows before it is killed; the rerun finds
    them in the store and must still answer as a clean run (and record each row once)."""
    ns = f"test-{uuid.uuid4().hex}"
    opts = {"store": "redis", "redis_url": redis_server, "redis_namespace": ns}
    out = tmp_path / "redis.parquet"
    crash_after_first_chunk(monkeypatch)
    with pytest.raises(Killed):
        score_file("fraud", days, out, root=fraud_root, chunk_size=CHUNK,
                   predictor=FraudPredictor.load("latest", root=fraud_root, **opts))
    monkeypatch.undo()
    p = FraudPredictor.load("latest", root=fraud_root, **opts)
    s = score_file("fraud", days, out, root=fraud_root, chunk_size=CHUNK, predictor=p)
    assert s["resumed_chunks"] == 1
    pd.testing.assert_frame_equal(scores(out), clean, check_exact=True)
    snap = p.store.snapshot()
    job = set(pd.read_parquet(days)["TRANSACTION_ID"])
    recorded = snap["TRANSACTION_ID"][snap["TRANSACTION_ID"].isin(job)]
    assert len(recorded) == len(job) and recorded.is_unique




@pytest.mark.slow
def test_ray_two_actors_equal_clean_local_run(days, clean, fraud_root, tmp_path, ray_session):
    out = tmp_path / "ray.parquet"
    s = score_file("fraud", days, out, root=fraud_root, chunk_size=CHUNK, engine="ray",
                   ray_actors=2)
    assert s["engine"] == "ray" and s["scored"] == len(clean)
    pd.testing.assert_frame_equal(scores(out), clean, check_exact=True)


def test_prepared_chunks_carry_features_not_transactions(days, fraud_root):
    """What a chunk scorer (a Ray actor) receives: ids, feature rows and reject marks only."""
    v = get_vertical("fraud")
    p = FraudPredictor.load("latest", root=fraud_root)
    before = p.store.snapshot()
    chunks = list(v.prepare_batch(p, v.read_batch(days, CHUNK, None), None, keep=["TX_FRAUD"]))
    assert [len(c) for c in chunks][:-1] == [CHUNK] * (len(chunks) - 1)
    raw = {"TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT"}
    assert not raw & set(chunks[0].columns) and "TX_FRAUD" in chunks[0]
    x = chunks[1][[c for c in chunks[1] if c.startswith("__x.")]].to_numpy()
    assert x.shape[1] == len(p.features) and np.isfinite(x).all()
    pd.testing.assert_frame_equal(p.store.snapshot(), before)  # a memory store is left as is
