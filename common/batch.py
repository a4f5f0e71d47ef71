"""Batch scoring: `verticals score <vertical> INPUT OUTPUT`.

Reads CSV / Parquet / JSONL / a folder of them in chunks (bounded memory), maps each row to a
request with the vertical's `row_to_payload`, validates it (bad rows go to
`OUTPUT.rejects.jsonl` with row number, field and reason), runs the same `Predictor.run_each`
that serving uses, and writes Parquet or CSV. Every finished chunk is an atomically renamed part
file under `OUTPUT.parts/`, so after `kill -9` a rerun skips finished chunks and redoes only the
interrupted one: no duplicate, no missing row. The parts are merged into OUTPUT at the end and
the summary (read = scored + rejected) goes to stdout and `OUTPUT.summary.json`.

`engine="ray"` sends each window of chunks through Ray Data `map_batches` with an actor pool
of the same Predictor, keeping the same parts, rejects and resume logic.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from common.batch_io import (
    clean_row,
    count_rows,
    flatten,
    input_files,
    iter_chunks,
    parse_row,
    prefetch,
    split_broken,
)
from common.errors import InvalidInput, VerticalsError
from common.predictor import Predictor
from common.registry import get_vertical

__all__ = ["score_file", "score_frame"]
log = logging.getLogger(__name__)
REJECT_COLS = ["row", "source", "field", "reason"]


def score_frame(
    predictor: Predictor,
    chunk: pd.DataFrame,
    vertical_name: str,
    args: argparse.Namespace | None = None,
    keep: list[str] | None = None,
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Score one chunk (with `__row`/`__source` columns): (output rows, reject records)."""
    vertical = get_vertical(vertical_name)
    chunk, broken = split_broken(chunk)  # rows the reader could not parse: rejected as they are
    if broken:
        df, rejects = (score_frame(predictor, chunk, vertical_name, args, keep) if len(chunk)
                       else (pd.DataFrame(), []))
        return df, broken + rejects
    columnar = vertical.score_columns(predictor, chunk, args)
    if columnar is not None:
        df, rejects = columnar
        if keep and len(df):
            kept = chunk.set_index("__row").loc[df["row"].to_numpy()]
            for i, k in enumerate(keep):
                df.insert(1 + i, k, kept[k].to_numpy() if k in kept else None)
        return df, rejects
    rows, rejects, requests, meta = [], [], [], []
    for rec in chunk.to_dict("records"):
        rec = clean_row(rec)
        row_no, source = rec.pop("__row"), rec.pop("__source")
        try:
            requests.append(parse_row(predictor, vertical, rec, args))
            meta.append((row_no, rec))
        except VerticalsError as e:
            rejects.append({"row": row_no, "source": source, "field": e.field, "reason": e.message})
    step = max(1, predictor.batch_job_size)
    for i in range(0, len(requests), step):
        results = predictor.run_each(requests[i : i + step])
        for (row_no, rec), res in zip(meta[i : i + step], results, strict=True):
            if isinstance(res, VerticalsError):
                src = chunk.loc[chunk["__row"] == row_no, "__source"].iloc[0]
                rejects.append(
                    {"row": row_no, "source": src, "field": res.field, "reason": res.message}
                )
                continue
            out = {"row": row_no}
            for k in keep or []:
                out[k] = rec.get(k)
            out.update(flatten(res.model_dump(mode="json")))
            rows.append(out)
    return pd.DataFrame(rows), rejects


def _job_key(input_path: Path, chunk_size: int, vertical: str, bundle: str) -> str:
    parts = [vertical, bundle, str(chunk_size)]
    # every file under a folder, not only tabular ones: a vertical with its own reader
    # (images, DICOM series) takes a folder of any files
    files = sorted(p for p in input_path.rglob("*") if p.is_file()) if input_path.is_dir() \
        else input_files(input_path)  # a missing or unreadable file: one clear error
    for f in files:
        st = f.stat()
        parts += [str(f.resolve()), str(st.st_size), str(st.st_mtime_ns)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


@contextmanager
def _writing(parts: Path, *tmp: Path) -> Iterator[None]:
    """A full disk while writing the job's files is one clear error naming the output: the
    half-written temporary files go (freeing their space), finished chunks stay for the rerun."""
    try:
        yield
    except OSError as e:
        for t in tmp:
            t.unlink(missing_ok=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(e):
            output = parts.with_suffix("")
            raise InvalidInput(
                "output",
                f"{output}: no space left on device; finished chunks are kept in {parts.name}/, "
                "free some space and rerun the same command to resume",
            ) from None
        raise


def _write_atomic(df: pd.DataFrame, rejects: list[dict], parts: Path, idx: int) -> None:
    tmp = parts / f".part-{idx:06d}.tmp"
    rtmp = parts / f".rejects-{idx:06d}.tmp"
    with _writing(parts, tmp, rtmp):
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp)
        rtmp.write_text("".join(json.dumps(r) + "\n" for r in rejects))
        for p in (tmp, rtmp):
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    os.replace(rtmp, parts / f"rejects-{idx:06d}.jsonl")
    os.replace(tmp, parts / f"part-{idx:06d}.parquet")  # the part file marks the chunk done


def _merge(parts: Path, output: Path) -> tuple[int, int]:
    tmps = (output.with_name(output.name + ".tmp"), parts / ".rejects.merged")
    with _writing(parts, *tmps):
        return _merge_parts(parts, output)


def _merge_parts(parts: Path, output: Path) -> tuple[int, int]:
    files = sorted(parts.glob("part-*.parquet"))
    schemas = [pq.read_schema(f) for f in files if pq.ParquetFile(f).metadata.num_rows]
    schema = pa.unify_schemas(schemas, promote_options="permissive") if schemas else None
    tmp = output.with_name(output.name + ".tmp")
    scored = 0
    if output.suffix.lower() == ".csv":
        header = True
        with open(tmp, "w") as fh:
            for f in files:
                df = pq.read_table(f).to_pandas()
                if len(df):
                    df.to_csv(fh, index=False, header=header)
                    header = False
                    scored += len(df)
    else:
        writer = pq.ParquetWriter(tmp, schema or pa.schema([("row", pa.int64())]))
        for f in files:
            t = pq.read_table(f)
            if t.num_rows:
                writer.write_table(t.select(schema.names).cast(schema) if schema else t)
                scored += t.num_rows
        writer.close()
    rej_tmp = parts / ".rejects.merged"
    rejected = 0
    with open(rej_tmp, "w") as fh:
        for f in sorted(parts.glob("rejects-*.jsonl")):
            text = f.read_text()
            fh.write(text)
            rejected += text.count("\n")
    os.replace(tmp, output)
    os.replace(rej_tmp, output.with_name(output.name + ".rejects.jsonl"))
    return scored, rejected


def score_file(
    vertical: str,
    input_path: str | Path,
    output_path: str | Path,
    *,
    bundle: str | Path = "latest",
    root: str | Path | None = None,
    chunk_size: int = 10_000,
    engine: str = "local",
    args: argparse.Namespace | None = None,
    keep: list[str] | None = None,
    predictor: Predictor | None = None,
    progress: bool | None = None,
    ray_actors: int = 2,
) -> dict[str, Any]:
    """Score INPUT into OUTPUT (Parquet unless OUTPUT ends in .csv); returns the summary."""
    t0 = time.time()
    input_path, output = Path(input_path), Path(output_path)
    if output.suffix.lower() not in (".parquet", ".pq", ".csv"):
        raise InvalidInput("output", f"{output.name}: write .parquet or .csv")
    if chunk_size < 1:
        raise InvalidInput("chunk_size", "must be >= 1")
    if engine not in ("local", "ray"):
        raise InvalidInput("engine", f"{engine!r} is not 'local' or 'ray'")
    spec = get_vertical(vertical)
    output.parent.mkdir(parents=True, exist_ok=True)
    parts = output.with_name(output.name + ".parts")
    custom = spec.read_batch(input_path, chunk_size, args)
    # a custom reader's input (fraud's sorted replay) is keyed too when it is a file or folder
    key = (_job_key(input_path, chunk_size, vertical, str(bundle))
           if custom is None or input_path.exists() else None)
    job_file = parts / "job.json"
    prev: dict[str, Any] | None = None
    if parts.exists() and job_file.exists():
        try:
            prev = json.loads(job_file.read_text())
        except ValueError:  # cut short by a full disk: it describes no job
            prev = {}
        if prev.get("key") != key:
            if any(parts.glob("part-*.parquet")):
                raise InvalidInput(
                    "output",
                    f"{parts} belongs to another job (input, chunk size or "
                    "bundle changed); delete it to start over",
                )
            shutil.rmtree(parts)  # a start that finished no chunk (unreadable input): no work lost
            prev = None
    parts.mkdir(exist_ok=True)
    if prev is None:
        tmp_job = parts / ".job.tmp"
        with _writing(parts, tmp_job):
            tmp_job.write_text(json.dumps({"key": key, "vertical": vertical,
                                           "input": str(input_path)}))
        os.replace(tmp_job, job_file)
    done = {int(p.stem.split("-")[1]) for p in parts.glob("part-*.parquet")}
    if predictor is None:
        predictor = spec.predictor_cls.load(bundle, root=root, **spec.predictor_options(args))
    chunks = custom if custom is not None else iter_chunks(input_path, chunk_size)
    # once per job, before any chunk is scored or sent to Ray: stateful features, in order
    chunks = spec.prepare_batch(predictor, chunks, args, keep, workdir=parts)
    total = count_rows(input_path) if custom is None else None
    show = progress if progress is not None else (sys.stderr.isatty() and not os.environ.get("CI"))
    bar = tqdm(total=total, unit="rows", desc=f"score {vertical}", disable=not show)
    read = 0
    if engine == "ray":
        from common.batch_ray import score_chunks_ray

        read = score_chunks_ray(
            vertical, chunks, done, parts, bundle, root, args, keep, ray_actors, bar
        )
    else:
        # one writer thread: chunk i is written while chunk i+1 is scored (at most one pending,
        # so memory stays bounded); a part file still appears only once fully written
        with ThreadPoolExecutor(1, thread_name_prefix="batch-write") as writer:
            pending: Future | None = None
            for idx, chunk in enumerate(prefetch(chunks)):
                if custom is not None and "__row" not in chunk:
                    chunk = _number(chunk, read)
                read += len(chunk)
                if idx not in done:
                    df, rejects = score_frame(predictor, chunk, vertical, args, keep)
                    if pending is not None:
                        pending.result()
                    pending = writer.submit(_write_atomic, df, rejects, parts, idx)
                bar.update(len(chunk))
            if pending is not None:
                pending.result()
    bar.close()
    scored, rejected = _merge(parts, output)
    if scored + rejected != read:  # never silently lose a row
        raise RuntimeError(
            f"row accounting failed: read {read} != scored {scored} + "
            f"rejected {rejected}; parts kept in {parts}"
        )
    shutil.rmtree(parts)
    summary = {
        "vertical": vertical,
        "input": str(input_path),
        "output": str(output),
        "rejects": str(output.with_name(output.name + ".rejects.jsonl")),
        "read": read,
        "scored": scored,
        "rejected": rejected,
        "resumed_chunks": len(done),
        "engine": engine,
        "bundle": str(predictor.bundle.path),
        "duration_s": round(time.time() - t0, 3),
    }
    summary["rows_per_s"] = round(read / max(summary["duration_s"], 1e-9), 1)
    output.with_name(output.name + ".summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _number(chunk: pd.DataFrame, start: int) -> pd.DataFrame:
    chunk = chunk.reset_index(drop=True)
    if "__source" not in chunk:
        chunk.insert(0, "__source", "")
    chunk.insert(0, "__row", range(start, start + len(chunk)))
    return chunk
