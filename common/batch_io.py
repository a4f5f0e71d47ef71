"""Chunked readers and the flattening of responses into table rows, for `common.batch`."""

from __future__ import annotations

import json
import math
import queue
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from common.errors import InvalidInput

__all__ = [
    "SUPPORTED", "input_files", "iter_chunks", "count_rows", "flatten", "clean_row",
    "numeric_columns", "prefetch",
]

SUPPORTED = (".csv", ".tsv", ".parquet", ".pq", ".jsonl", ".ndjson", ".json")


def input_files(path: Path) -> list[Path]:
    """The file itself, or the supported files of a folder (sorted, so chunks are stable)."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in SUPPORTED)
        if not files:
            raise InvalidInput("input", f"folder {path} holds no {'/'.join(SUPPORTED)} files")
        return files
    if not path.exists():
        raise InvalidInput("input", f"{path} does not exist")
    if path.suffix.lower() not in SUPPORTED:
        raise InvalidInput("input", f"{path.name}: unsupported format (use {', '.join(SUPPORTED)})")
    return [path]


def _read_file(path: Path, chunk_size: int) -> Iterator[pd.DataFrame]:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_size):
            yield batch.to_pandas()
    elif suffix in (".csv", ".tsv"):
        sep = "\t" if suffix == ".tsv" else ","
        yield from pd.read_csv(path, sep=sep, chunksize=chunk_size)
    else:
        yield from pd.read_json(path, lines=True, chunksize=chunk_size, dtype=False)


def iter_chunks(path: Path, chunk_size: int) -> Iterator[pd.DataFrame]:
    """Chunks of at most chunk_size rows across all input files, with `__row` (0-based over the
    whole input) and `__source` (file name) columns."""
    row = 0
    for f in input_files(path):
        try:
            for df in _read_file(f, chunk_size):
                df = df.reset_index(drop=True)
                df.insert(0, "__source", f.name)
                df.insert(0, "__row", range(row, row + len(df)))
                row += len(df)
                yield df
        except (ValueError, pd.errors.ParserError, OSError) as e:
            raise InvalidInput("input", f"{f.name}: cannot be read ({e})") from None


def count_rows(path: Path) -> int | None:
    """Row count when cheap (Parquet metadata); None otherwise."""
    total = 0
    for f in input_files(path):
        if f.suffix.lower() not in (".parquet", ".pq"):
            return None
        total += pq.ParquetFile(f).metadata.num_rows
    return total


def clean_row(row: dict[str, Any]) -> dict[str, Any]:
    """pandas gives NaN for empty cells and numpy scalars: make them None / Python values."""
    out = {}
    for k, v in row.items():
        if isinstance(v, float) and math.isnan(v):
            v = None
        elif hasattr(v, "item") and not isinstance(v, list | dict | str):
            try:
                v = v.item()
            except (ValueError, AttributeError):
                pass
        out[k] = v
    return out


def flatten(response: dict[str, Any]) -> dict[str, Any]:
    """Nested values (lists, dicts) become JSON strings so every output is one flat row."""
    return {
        k: json.dumps(v, sort_keys=True) if isinstance(v, list | dict) else v
        for k, v in response.items()
    }


def numeric_columns(
    chunk: pd.DataFrame, columns: list[str], *, minimum: dict[str, float] | None = None
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Validate numeric input columns of a chunk at once (for `Vertical.score_columns`).

    Returns (float32 matrix of the valid rows, boolean mask of valid rows, reject records).
    A row is rejected for its first column that is missing, not a finite number, or below
    `minimum[column]`; a column absent from the file rejects every row, naming the column.
    """
    n = len(chunk)
    # one set of names: `name in chunk` on an Arrow-backed string index rebuilds its lookup
    # table per frame, a visible cost at 32 columns x every chunk
    present = set(chunk.columns)
    absent = [c for c in columns if c not in present]
    numeric = [c for c in columns if c in present and chunk[c].dtype.kind in "fiub"]
    if len(numeric) == len(columns):  # the common case (Parquet): one block copy
        values = chunk[columns].to_numpy(np.float32, na_value=np.nan)
    else:
        values = np.full((n, len(columns)), np.nan, dtype=np.float32)
        for j, col in enumerate(columns):
            if col not in absent:
                values[:, j] = pd.to_numeric(chunk[col], errors="coerce").to_numpy(np.float32)
    with np.errstate(invalid="ignore"):
        low = np.array([(minimum or {}).get(c, -np.inf) for c in columns])
        bad_cells = ~np.isfinite(values) | (values < low)
    ok = ~bad_cells.any(axis=1)
    rejects = []
    if not ok.all():
        rows, sources = chunk["__row"].to_numpy(), chunk["__source"].to_numpy()
        for i in np.flatnonzero(~ok):  # only the bad rows are visited one by one
            j = int(np.argmax(bad_cells[i]))
            col, v = columns[j], values[i, j]
            reason = ("required column is missing from the input" if col in absent
                      else "missing or not a finite number" if not np.isfinite(v)
                      else f"must be >= {low[j]}")
            rejects.append({"row": int(rows[i]), "source": sources[i], "field": col,
                            "reason": reason})
    return (values if ok.all() else values[ok]), ok, rejects


def prefetch(items: Iterable[Any], depth: int = 1) -> Iterator[Any]:
    """Produce `items` from a background thread, `depth` ahead: the next chunk is read and
    parsed (pyarrow/pandas release the GIL) while the model scores the current one. Errors
    are raised in the consumer at the point the failing item would have been."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                q.put((True, item))
            q.put((True, done))
        except BaseException as e:  # handed to the consumer
            q.put((False, e))

    threading.Thread(target=produce, daemon=True, name="batch-prefetch").start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while not q.empty():  # unblock a producer waiting on a full queue
            q.get_nowait()
