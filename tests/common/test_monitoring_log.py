"""The prediction log (atomic Parquet segments, DuckDB reads, retention, compaction, a real
kill -9) and feedback joined to it across processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import date, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from common.errors import VerticalsError
from common.monitoring.feedback import FeedbackStore
from common.monitoring.predlog import PredictionLog, check_writable, rows_to_table, write_segment

ROOT = Path(__file__).resolve().parents[2]


def rows(start: int, n: int, version: str = "v1", ts: float | None = None):
    ts = time.time() if ts is None else ts
    return [(f"r{i}", ts, version, {"id": f"case{i}", "features": {"a": i * 0.5, "s": "x",
                                                                  "e": [1.0, 2.0]},
                                    "score": 0.25, "probs": [0.75, 0.25], "prediction": "0"})
            for i in range(start, start + n)]


def test_segments_hold_the_documented_columns_and_read_back_with_duckdb(tmp_path):
    log = PredictionLog(tmp_path, "toy", start=False)
    log.append(rows(0, 3))
    assert log.segments() == []  # no I/O until the flusher runs
    assert log.flush() == 3
    log.append(rows(3, 2, version="v2"))
    log.flush()
    segs = log.segments()
    assert len(segs) == 2 and all(s.parent.name.startswith("date=") for s in segs)
    assert not list(tmp_path.rglob(".*.tmp"))
    df = log.read()
    assert list(df["request_id"]) == [f"r{i}" for i in range(5)]
    assert {"request_id", "ts", "vertical", "model_version", "id", "score", "prediction", "probs",
            "f_a", "f_s", "f_e", "date"} <= set(df.columns)
    assert df["f_e"].iloc[0].tolist() == [1.0, 2.0] and df["f_s"].iloc[0] == "x"
    assert df["probs"].iloc[0] == "[0.75, 0.25]"
    per = log.query("SELECT model_version, count(*) n FROM log GROUP BY 1 ORDER BY 1")
    assert per.to_dict("records") == [{"model_version": "v1", "n": 3},
                                      {"model_version": "v2", "n": 2}]


def test_a_log_dir_with_a_quote_in_its_path_reads_and_joins(tmp_path):
    """The log's paths are spliced into DuckDB SQL as quoted literals: a quote in a folder
    name (`O'Brien's logs`) reads back and joins feedback like any other path."""
    base = tmp_path / "O'Brien's logs"
    log = PredictionLog(base, "toy", start=False)
    log.append(rows(0, 2))
    log.flush()
    assert list(log.read()["request_id"]) == ["r0", "r1"]
    assert FeedbackStore(log).record("toy", [{"id": "case1", "label": 1}])["accepted"] == 1
    from common.monitoring.report import read_joined

    assert list(read_joined(base, "toy")["label"].fillna("-")) == ["-", "1"]


def test_empty_log_reads_as_empty(tmp_path):
    assert PredictionLog(tmp_path, "toy", start=False).read().empty


def test_background_flusher_writes_by_time_and_close_writes_the_rest(tmp_path):
    log = PredictionLog(tmp_path, "toy", flush_s=0.05)
    seen = []
    log.listeners.append(lambda table: seen.extend(table["request_id"].to_pylist()))
    log.append(rows(0, 4))
    t_end = time.monotonic() + 5
    while not log.segments() and time.monotonic() < t_end:
        time.sleep(0.02)
    log.append(rows(4, 1))
    log.close()
    assert len(log.read()) == 5 and seen == [f"r{i}" for i in range(5)]


def test_unwritable_log_dir_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(VerticalsError, match="is not writable") as e:
        check_writable(blocker / "logs")
    assert "\n" not in e.value.message and e.value.field == "log_dir"


def test_retention_drops_old_days_and_compaction_merges_a_past_day(tmp_path, monkeypatch):
    log = PredictionLog(tmp_path, "toy", start=False, retention_days=30)
    today = date(2026, 3, 31)
    for day, n in ((today - timedelta(days=40), 2), (today - timedelta(days=1), 3),
                   (today, 2)):
        for k in range(n):
            write_segment(rows_to_table("toy", rows(10 * k, 2)), log.base / f"date={day}",
                          f"seg-{k}.parquet")
    log.maintain(today=today)
    parts = sorted(p.name for p in log.base.glob("date=*"))
    assert parts == [f"date={today - timedelta(days=1)}", f"date={today}"]
    past = list((log.base / parts[0]).glob("*.parquet"))
    assert len(past) == 1 and pq.read_table(past[0]).num_rows == 6  # 3 segments merged
    assert len(list((log.base / parts[1]).glob("*.parquet"))) == 2  # today: left alone


CHILD = textwrap.dedent("""
    import sys, time
    from common.monitoring.predlog import PredictionLog
    log = PredictionLog(sys.argv[1], "toy", flush_s=0.02, flush_rows=100)
    i = 0
    while True:
        log.append([(f"r{i + k}", time.time(), "v1", {"features": {"a": float(i + k)},
                                                      "score": 0.5}) for k in range(5)])
        i += 5
        print(i, flush=True)
        time.sleep(0.0005)
""")


def test_kill_9_loses_at_most_the_open_batch_and_never_corrupts_a_segment(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], env=env,
                             stdout=subprocess.PIPE, text=True)
    try:
        base = tmp_path / "toy"
        t_end = time.monotonic() + 60
        while len(list(base.glob("date=*/*.parquet"))) < 20 and time.monotonic() < t_end:
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        out, _ = child.communicate(timeout=30)
    appended = int(out.split()[-1])  # rows the child had handed to the log when killed
    segs = sorted(base.glob("date=*/*.parquet"))
    assert len(segs) >= 20
    ids = [int(r[1:]) for s in segs for r in pq.read_table(s)["request_id"].to_pylist()]
    on_disk = len(ids)
    assert sorted(ids) == list(range(on_disk))  # a gapless prefix: no duplicates, no holes
    # lost: the batch still buffered plus, at worst, the one being written at the kill
    assert 0 <= appended - on_disk <= 2 * 100 + 5


def test_feedback_joins_by_request_or_business_id_across_processes(tmp_path):
    a = PredictionLog(tmp_path, "toy", start=False)  # two workers' logs, one directory
    b = PredictionLog(tmp_path, "toy", start=False)
    a.append(rows(0, 3))
    a.flush()
    b.append(rows(3, 3))
    b.flush()
    b.append(rows(6, 1))  # still in b's open batch
    store = FeedbackStore(a)
    items = [{"id": "r0", "label": 1}, {"id": "case4", "label": 0}, {"id": "r5", "label": 1},
             {"id": "nope", "label": 1}, {"id": "r6", "label": 0}]
    out = store.record("toy", items)
    # r0: a's memory; case4 and r5: b's flushed segment (DuckDB); r6 is in b's unflushed batch
    assert out == {"accepted": 3, "unknown": 2, "unknown_ids": ["nope", "r6"]}
    fb = pq.read_table(next((tmp_path / "toy" / "feedback").glob("*.parquet"))).to_pylist()
    assert [(r["id"], r["label"], r["kind"]) for r in fb] == [
        ("r0", "1", "known"), ("case4", "0", "known"), ("r5", "1", "known"),
        ("nope", "1", "unknown"), ("r6", "0", "unknown")]
    assert FeedbackStore(b).record("toy", [{"id": "r6", "label": 0}])["accepted"] == 1
    with pytest.raises(ValueError, match="store"):
        store.record("fraud", items)


def test_a_stalled_flusher_drops_and_counts_rather_than_grow_without_bound(tmp_path):
    from common.monitoring.predlog import MAX_BUFFERED

    log = PredictionLog(tmp_path, "toy", start=False, flush_rows=2)
    for i in range(MAX_BUFFERED * 2 + 3):
        log.append(rows(i, 1))
    assert log.dropped == 3 and log.flush() == MAX_BUFFERED * 2


def test_records_arrow_cannot_reconcile_still_log(tmp_path):
    """A feature that is a number in one record and text in another is kept as text, and a
    record without features or output still logs its ids."""
    recs = rows(0, 2)
    recs[1][3]["features"]["a"] = "n/a"
    recs.append(("r2", time.time(), "v1", {}))
    table = rows_to_table("toy", recs)
    assert table["f_a"].to_pylist() == ["0.0", "n/a", None]
    assert table["request_id"].to_pylist() == ["r0", "r1", "r2"]
    assert table["score"].to_pylist() == [0.25, 0.25, None]
