"""The prediction log: every answered request as a row in per-process Parquet segments.

    DIR/<vertical>/date=YYYY-MM-DD/<host>-<pid>-<start ms>.<n>-<seq>.parquet

`append(rows)` only extends an in-memory list (it runs on the serving path); a background thread
turns the buffer into Arrow columns and writes each batch as one complete file (written under a
dot-name, fsynced, renamed, directory fsynced) every `flush_s` seconds or `flush_rows` rows. A
`kill -9` therefore loses at most the open batch and never leaves a partial segment under a
`.parquet` name. Several workers and replicas write side by side (host, pid and start time
make names unique). Read with DuckDB (`query`, `read`).

A row handed to `append` is `(request_id, ts, model_version, record)`, `ts` in Unix seconds and
`record` what `Predictor.monitor_record` returned. Columns: request_id, ts (timestamp UTC),
vertical, model_version, id, score, prediction, probs (JSON), f_<feature> per input feature.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import logging
import os
import shutil
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.errors import VerticalsError

__all__ = ["PredictionLog", "check_writable", "write_segment", "Row", "RETENTION_ENV",
           "duckdb_glob", "sql_literal", "time_filter"]
log = logging.getLogger(__name__)

Row = tuple[str, float, str, dict[str, Any]]
RETENTION_ENV = "VERTICALS_LOG_RETENTION_DAYS"
COMPACT_ENV = "VERTICALS_LOG_COMPACT"
RECENT_IDS = 200_000  # ids kept in memory per process for feedback lookups
_MAINTAIN_S = 3600.0  # retention and compaction at most hourly
_INSTANCES = itertools.count()
MAX_BUFFERED = 50  # flush batches held in memory at most


def segment_prefix() -> str:
    """Unique per writer: host, pid, start time in ms and an instance number (a restarted
    container may reuse pid 1; two writers of one process must not collide)."""
    return f"{socket.gethostname()}-{os.getpid()}-{int(time.time() * 1000)}.{next(_INSTANCES)}"


def check_writable(directory: str | Path) -> Path:
    """Create `directory` if needed and prove a file can be written, fsynced and removed
    there; VerticalsError with one line otherwise (the server refuses to start)."""
    d = Path(directory)
    probe = d / f".probe-{os.getpid()}"
    try:
        d.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"ok")
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as e:
        raise VerticalsError(f"prediction log directory {d} is not writable: "
                             f"{e.strerror or e}", "log_dir") from None
    return d


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_segment(table: pa.Table, directory: Path, name: str) -> Path:
    """Write `table` as `directory/name` atomically: dot-file, fsync, rename, fsync dir."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{name}.tmp"
    with open(tmp, "wb") as f:
        pq.write_table(table, f, compression="zstd")
        f.flush()
        os.fsync(f.fileno())
    final = directory / name
    os.replace(tmp, final)
    _fsync_dir(directory)
    return final


def sql_literal(text: str) -> str:
    """`text` as an SQL string literal (quotes doubled). DuckDB takes no bound parameters in a
    view's table function, so the log's own paths are spliced in this way, never request data."""
    return "'" + text.replace("'", "''") + "'"


def time_filter(column: str, since: datetime | None, until: datetime | None
                ) -> tuple[str, list[Any]]:
    """(`WHERE column >= ? AND column < ?` for the bounds given, or "", the bound values)."""
    where, params = [], []
    if since is not None:
        where.append(f"{column} >= ?")
        params.append(since)
    if until is not None:
        where.append(f"{column} < ?")
        params.append(until)
    return (f"WHERE {' AND '.join(where)}" if where else ""), params


def duckdb_glob(base: Path) -> str:
    """The log's segments as an SQL string literal, for `read_parquet(...)`."""
    return sql_literal(str(base / "date=*" / "*.parquet"))


def _column(values: list[Any]) -> pa.Array:
    """One feature column: list<float32> for embeddings, string for categories, else float."""
    sample = next((v for v in values if v is not None), None)
    if isinstance(sample, list | tuple):
        return pa.array(values, type=pa.list_(pa.float32()))
    try:
        if not isinstance(sample, str):
            return pa.array([None if v is None else float(v) for v in values], pa.float64())
    except (TypeError, ValueError):  # numbers mixed with text: keep it all as text
        pass
    return pa.array([None if v is None else str(v) for v in values], type=pa.string())


def rows_to_table(vertical: str, rows: list[Row]) -> pa.Table:
    """Arrow columns from buffered rows (in the flusher thread, never on the request path).
    Records convert in C++ (`Table.from_pylist`); records whose types Arrow cannot reconcile
    (one feature both text and number) take a slower per-column path."""
    recs = [r[3] for r in rows]
    head = {
        "request_id": pa.array([r[0] for r in rows], pa.string()),
        "ts": pc.cast(pc.multiply(pa.array([r[1] for r in rows], pa.float64()), 1e6),
                      pa.int64(), safe=False).cast(pa.timestamp("us", tz="UTC")),
        "vertical": pa.repeat(pa.scalar(vertical), len(rows)),
        "model_version": pa.array([r[2] for r in rows], pa.string()),
        "probs": pa.array([None if r.get("probs") is None else json.dumps(list(r["probs"]))
                           for r in recs], pa.string()),
    }
    try:
        return _fast(head, recs)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return _slow(head, recs)


def _cast(col: Any, kind: pa.DataType) -> pa.Array:
    return col if col.type == kind else pc.cast(col, kind)


def _fast(head: dict[str, Any], recs: list[dict[str, Any]]) -> pa.Table:
    t = pa.Table.from_pylist(recs)
    cols = dict(head)

    def get(name: str, kind: pa.DataType) -> pa.Array:
        if name not in t.column_names:
            return pa.nulls(t.num_rows, kind)
        return _cast(t[name].combine_chunks(), kind)

    cols["id"] = get("id", pa.string())
    cols["score"] = get("score", pa.float64())
    cols["prediction"] = get("prediction", pa.string())
    feats = t["features"].combine_chunks() if "features" in t.column_names else None
    if feats is not None and pa.types.is_struct(feats.type):
        for i, f in enumerate(feats.type):
            col = feats.field(i)
            if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
                col = pc.cast(col, pa.list_(pa.float32()))
            elif pa.types.is_integer(col.type) or pa.types.is_boolean(col.type):
                col = pc.cast(col, pa.float64())
            elif pa.types.is_null(col.type):
                col = pa.nulls(len(col), pa.float64())
            elif not (pa.types.is_floating(col.type) or pa.types.is_string(col.type)):
                raise pa.ArrowInvalid(f"feature {f.name}: unsupported type {col.type}")
            cols[f"f_{f.name}"] = col
    return pa.table(cols)


def _slow(head: dict[str, Any], recs: list[dict[str, Any]]) -> pa.Table:
    cols = dict(head)
    cols["id"] = pa.array([None if r.get("id") is None else str(r["id"]) for r in recs],
                          pa.string())
    cols["score"] = pa.array([r.get("score") for r in recs], pa.float64())
    cols["prediction"] = pa.array([None if r.get("prediction") is None
                                   else str(r["prediction"]) for r in recs], pa.string())
    feats = [r.get("features") or {} for r in recs]
    for name in dict.fromkeys(itertools.chain.from_iterable(feats)):
        cols[f"f_{name}"] = _column([f.get(name) for f in feats])
    return pa.table(cols)


class PredictionLog:
    """Buffer + background flusher for one vertical's log under `directory`.

    `listeners` are called in the flusher thread with each flushed batch as an Arrow table (the
    Monitor's windows read its columns without a Python loop per row), after the write."""

    def __init__(self, directory: str | Path, vertical: str, flush_s: float = 1.0,
                 flush_rows: int = 2048, retention_days: float | None = None,
                 start: bool = True):
        self.root = Path(directory)
        self.vertical = vertical
        self.base = self.root / vertical
        self.flush_s, self.flush_rows = flush_s, flush_rows
        self.retention_days = (retention_days if retention_days is not None
                               else float(os.environ.get(RETENTION_ENV, "30")))
        # replicas on a shared filesystem: let one compact (flock may not span hosts)
        self.compaction = os.environ.get(COMPACT_ENV, "1") != "0"
        self.listeners: list[Callable[[pa.Table], None]] = []
        self.rows_written = 0
        self.write_errors = 0
        self.dropped = 0  # rows refused because the buffer was full
        self._buf: list[Row] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._seq = 0
        self._prefix = segment_prefix()
        self._recent: deque[tuple[pa.ChunkedArray, pa.ChunkedArray]] = deque()
        self._recent_rows = 0
        self._last_maintain = 0.0
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    # ---- the serving path -----------------------------------------------------------------
    def append(self, rows: list[Row]) -> None:
        """Hand rows over (no I/O here). If the flusher cannot keep up (a stalled disk), rows
        beyond `MAX_BUFFERED` batches are dropped and counted rather than held without bound."""
        with self._lock:
            if len(self._buf) >= MAX_BUFFERED * self.flush_rows:
                self.dropped += len(rows)
                return
            self._buf.extend(rows)
            full = len(self._buf) >= self.flush_rows
        if full:
            self._wake.set()

    # ---- the flusher ----------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"predlog-{self.vertical}",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.flush_s)
            self._wake.clear()
            self.flush()
            if time.monotonic() - self._last_maintain > _MAINTAIN_S:
                self._last_maintain = time.monotonic()
                self.maintain()

    def flush(self) -> int:
        """Write what is buffered as one segment now; returns the rows written."""
        with self._lock:
            rows, self._buf = self._buf, []
        if not rows:
            return 0
        table = None
        try:
            table = rows_to_table(self.vertical, rows)
            self._remember(table)
            day = datetime.fromtimestamp(rows[0][1], UTC).date().isoformat()
            self._seq += 1
            write_segment(table, self.base / f"date={day}", f"{self._prefix}-{self._seq:06d}"
                          ".parquet")
            self.rows_written += len(rows)
        except Exception as e:  # a full disk must not stop serving: count, log, go on
            self.write_errors += 1
            log.error("%s: prediction log write failed (%d rows lost): %s",
                      self.vertical, len(rows), e)
        for fn in self.listeners if table is not None else ():
            try:
                fn(table)
            except Exception:
                log.exception("%s: prediction log listener failed", self.vertical)
        return len(rows)

    def close(self) -> None:
        """Stop the flusher and write what is left."""
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()

    # ---- ids seen by this process (feedback joins) -------------------------------------------
    def _remember(self, table: pa.Table) -> None:
        """Keep the id columns of the last RECENT_IDS flushed rows (Arrow, no per-row work)."""
        self._recent.append((table["request_id"], table["id"]))
        self._recent_rows += table.num_rows
        while self._recent_rows - len(self._recent[0][0]) >= RECENT_IDS:
            self._recent_rows -= len(self._recent.popleft()[0])

    def recent(self, keys: list[str]) -> set[str]:
        """Those of `keys` this process logged lately as a request id or business id
        (flushed, or still buffered)."""
        with self._lock:
            buf = list(self._buf)
        seen = {r[0] for r in buf} | {str(r[3]["id"]) for r in buf if r[3].get("id") is not None}
        found = {k for k in keys if k in seen}
        want = pa.array([k for k in dict.fromkeys(keys) if k not in found], pa.string())
        for rid, bid in list(self._recent):
            if not len(want):
                break
            hit = pc.or_(pc.is_in(want, value_set=rid.combine_chunks()),
                         pc.is_in(want, value_set=bid.combine_chunks()))
            found.update(want.filter(hit).to_pylist())
            want = want.filter(pc.invert(hit))
        return found

    # ---- reading ----------------------------------------------------------------------------
    def segments(self) -> list[Path]:
        return sorted(self.base.glob("date=*/*.parquet"))

    def connect(self):
        """A DuckDB connection with a `log` view over every segment (empty when none)."""
        import duckdb

        con = duckdb.connect()
        if self.segments():
            # only the log's own path is spliced in, quoted by sql_literal
            src = duckdb_glob(self.base)
            con.execute(f"CREATE VIEW log AS SELECT * FROM read_parquet({src}"  # nosec B608
                        ", union_by_name=true, hive_partitioning=true)")
        else:
            con.execute("CREATE VIEW log AS SELECT NULL::VARCHAR request_id, "
                        "NULL::TIMESTAMPTZ ts, NULL::VARCHAR vertical, NULL::VARCHAR "
                        "model_version, NULL::VARCHAR id, NULL::DOUBLE score, NULL::VARCHAR "
                        "prediction, NULL::VARCHAR probs, NULL::DATE date WHERE false")
        return con

    def query(self, sql: str, params: list[Any] | None = None) -> Any:
        """Run SQL over the `log` view; returns a pandas DataFrame."""
        con = self.connect()
        try:
            return con.execute(sql, params or []).df()
        finally:
            con.close()

    def read(self, since: datetime | None = None, until: datetime | None = None) -> Any:
        cond, params = time_filter("ts", since, until)
        # fixed clauses only; the values are bound parameters
        return self.query(f"SELECT * FROM log {cond} ORDER BY ts", params)  # nosec B608

    # ---- retention and compaction ---------------------------------------------------------
    def maintain(self, today: date | None = None) -> None:
        """Drop date partitions older than the retention; merge each past day's segments into
        one file. A lock file keeps two processes on this host from compacting at once."""
        today = today or datetime.now(UTC).date()
        if not self.base.is_dir():
            return
        try:
            with open(self.base / ".maintain.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                for part in sorted(self.base.glob("date=*")):
                    try:
                        day = date.fromisoformat(part.name[5:])
                    except ValueError:
                        continue
                    if day < today - timedelta(days=self.retention_days):
                        shutil.rmtree(part, ignore_errors=True)
                    elif day < today and self.compaction:
                        self.compact(part)
        except BlockingIOError:
            return
        except OSError as e:
            log.warning("%s: log maintenance failed: %s", self.vertical, e)

    def compact(self, part: Path) -> Path | None:
        """Merge a (finished) day's segments into one; inputs are removed only after the merged
        file is durable, so a crash leaves at worst duplicates of one day, never a loss."""
        files = sorted(p for p in part.glob("*.parquet"))
        if len(files) < 2:
            return None
        # segments may differ in feature columns: missing ones become nulls
        table = pa.concat_tables([pq.read_table(f) for f in files],
                                 promote_options="permissive").sort_by("ts")
        out = write_segment(table, part, f"compact-{self._prefix}-{len(files)}.parquet")
        for f in files:
            f.unlink(missing_ok=True)
        _fsync_dir(part)
        return out
