"""Chunked readers and the flattening of responses into table rows, for `common.batch`."""

from __future__ import annotations

import json
import math
import queue
import re
import threading
import types
import typing
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from pydantic import BaseModel

from common.errors import InvalidInput

if typing.TYPE_CHECKING:
    from common.predictor import Predictor
    from common.vertical import Vertical

__all__ = [
    "SUPPORTED", "input_files", "check_output_path", "iter_chunks", "count_rows", "flatten",
    "clean_row",
    "numeric_columns", "prefetch", "ERROR_COL", "split_broken", "typed_cells", "parse_row",
]

SUPPORTED = (".csv", ".tsv", ".parquet", ".pq", ".jsonl", ".ndjson", ".json")
# a row the reader could not parse (a bad JSON line, a cut last CSV line) carries its reason in
# this column, so it is counted and rejected like any bad row instead of failing the whole file
ERROR_COL = "__error"
_CUT = "the last line has no line end: the file looks cut short"


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


def check_output_path(input_path: Path, output: Path) -> None:
    """Refuse an output that would clobber the input or be read back as input: the input file
    itself (by path, link or hard link), a file inside the input folder (a rerun would read the
    output, its parts and its rejects as input), or an existing directory. The parts, rejects
    and summary are always written beside the output (`OUTPUT.parts/`, `OUTPUT.rejects.jsonl`,
    `OUTPUT.summary.json`), never elsewhere."""
    inp, out = input_path.resolve(), output.resolve()
    companions = [out, *(out.with_name(out.name + s)
                         for s in (".parts", ".rejects.jsonl", ".summary.json", ".tmp"))]
    if inp in companions or (output.exists() and input_path.exists()
                             and output.samefile(input_path)):
        raise InvalidInput("output", f"{output} would overwrite the input {input_path}")
    if input_path.is_dir() and out.is_relative_to(inp):
        raise InvalidInput("output", f"{output} lies inside the input folder {input_path}: a "
                                     "rerun would read it, its parts and rejects as input")
    if output.is_dir():
        raise InvalidInput("output", f"{output} is a directory; name an output file")


def _read_file(path: Path, chunk_size: int) -> Iterator[pd.DataFrame]:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_size):
            yield batch.to_pandas()
    elif suffix in (".csv", ".tsv"):
        yield from _read_csv(path, "\t" if suffix == ".tsv" else ",", chunk_size)
    else:
        yield from _read_jsonl(path, chunk_size)


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        if fh.seek(0, 2) == 0:
            return True
        fh.seek(-1, 2)
        return fh.read(1) in (b"\n", b"\r")


def _read_csv(path: Path, sep: str, chunk_size: int) -> Iterator[pd.DataFrame]:
    """pandas' chunked reader; a last line without its line end is a cut row, and a cut row can
    look valid (`12.5` cut to `12`), so it is flagged for rejection rather than scored."""
    cut = not _ends_with_newline(path)
    prev = None
    for df in pd.read_csv(path, sep=sep, chunksize=chunk_size):
        if prev is not None:
            yield prev
        prev = df
    if prev is not None:
        if cut and len(prev):
            prev[ERROR_COL] = None
            prev.iloc[-1, prev.columns.get_loc(ERROR_COL)] = _CUT
        yield prev


def _read_jsonl(path: Path, chunk_size: int) -> Iterator[pd.DataFrame]:
    """One JSON object per line, parsed line by line so that one bad line is one rejected row
    (its reason in ERROR_COL) and the good ones around it are still scored. Blank lines are not
    rows. `json` keeps big integers and full float precision, as the REST API would."""
    recs: list[dict[str, Any]] = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
                if not isinstance(rec, dict):
                    rec = {ERROR_COL: f"line {lineno}: not a JSON object"}
            except UnicodeDecodeError:
                rec = {ERROR_COL: f"line {lineno}: not valid UTF-8"}
            except ValueError as e:
                cut = "" if raw.endswith(b"\n") else f"; {_CUT}"
                rec = {ERROR_COL: f"line {lineno}: not valid JSON ({e}){cut}"}
            recs.append(rec)
            if len(recs) >= chunk_size:
                yield pd.DataFrame.from_records(recs)
                recs = []
    if recs:
        yield pd.DataFrame.from_records(recs)


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
        try:
            total += pq.ParquetFile(f).metadata.num_rows
        except (ValueError, OSError) as e:  # a cut or corrupt file has no readable footer
            raise InvalidInput("input", f"{f.name}: cannot be read ({e})") from None
    return total


def split_broken(chunk: pd.DataFrame) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """(the rows the reader could parse, without ERROR_COL; reject records for the others)."""
    if ERROR_COL not in chunk.columns:
        return chunk, []
    err = chunk[ERROR_COL]
    bad = err.notna().to_numpy()
    rejects = [{"row": int(r), "source": s, "field": "input",
                "reason": InvalidInput("input", str(e)).message}
               for r, s, e in zip(chunk["__row"][bad], chunk["__source"][bad], err[bad],
                                  strict=True)]
    # a broken row holds nothing but its reason, so it adds no column of its own
    return chunk.loc[~bad].drop(columns=ERROR_COL), rejects


# bounded: int() of a 5,000-digit cell raises (CPython's digit limit); longer stays text
_INT = re.compile(r"[+-]?\d{1,40}")


def _number_kind(annotation: Any) -> type | None:
    """int or float when a field's type is one of them (or an Optional of one), else None."""
    if annotation in (int, float):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = {_number_kind(a) for a in typing.get_args(annotation)} - {None}
        return kinds.pop() if len(kinds) == 1 else None
    return None


def typed_cells(payload: Any, model: type[BaseModel]) -> Any:
    """Give the numbers of a file row their number type before strict validation: a CSV cell is
    text (`"42"`), and pandas widens an integer column to float (`42.0`) when one cell is empty,
    so without this one bad cell would reject every row of its column. Only top-level fields the
    request model types as int or float are touched; anything else is left for it to judge."""
    if not isinstance(payload, dict):
        return payload
    out = dict(payload)
    for name, field in model.model_fields.items():
        kind, v = _number_kind(field.annotation), payload.get(name)
        if kind is None or v is None or isinstance(v, bool):
            continue
        if kind is int and isinstance(v, float) and v.is_integer():
            out[name] = int(v)
        elif kind is int and isinstance(v, str) and _INT.fullmatch(v.strip()):
            out[name] = int(v)
        elif kind is float and isinstance(v, str):
            try:
                out[name] = float(v)
            except ValueError:
                pass
    return out


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


def parse_row(predictor: Predictor, vertical: Vertical, row: dict[str, Any], args: Any
              ) -> BaseModel:
    """One cleaned input row → its validated request, as every batch path must do it: a row the
    reader could not parse is rejected with the reader's reason (field `input`), and
    file cells get their number types (`typed_cells`) before the API's own validation."""
    reason = row.pop(ERROR_COL, None)
    if reason is not None:
        raise InvalidInput("input", str(reason))
    payload = typed_cells(vertical.row_to_payload(row, args), predictor.request_model)
    return predictor.parse(payload)
