"""Chunked readers and the flattening of responses into table rows, for `common.batch`."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from common.errors import InvalidInput

__all__ = ["SUPPORTED", "input_files", "iter_chunks", "count_rows", "flatten", "clean_row"]

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
