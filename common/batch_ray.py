"""The `--engine ray` path of `common.batch`: windows of chunks through Ray Data `map_batches`
with an actor pool, each actor holding one Predictor (loaded once, like a serving replica).

The chunks are those `Vertical.prepare_batch` already prepared in the driver, so actors do only
stateless work, and their answers come back as Parquet bytes: the very values the local engine
writes (a JSON round trip would keep 10 significant digits of every float)."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from common.batch_io import clean_row

__all__ = ["score_chunks_ray"]


class _ScoringActor:
    def __init__(self, vertical: str, bundle: str, root: str | None, args, keep):
        from common.registry import get_vertical

        self.vertical = vertical
        spec = get_vertical(vertical)
        self.predictor = spec.predictor_cls.load(bundle, root=root, **spec.predictor_options(args))
        self.args, self.keep = args, keep

    def __call__(self, chunk: pd.DataFrame) -> pd.DataFrame:
        from common.batch import score_frame

        idx = int(chunk["__chunk"].iloc[0])
        chunk = chunk.drop(columns="__chunk")
        df, rejects = score_frame(self.predictor, chunk, self.vertical, self.args, self.keep)
        # one output table per input batch: scored rows as Parquet plus the rejects, so the
        # driver can write the same part files as the local engine
        return pd.DataFrame(
            {"__chunk": [idx], "rows": [df.to_parquet(index=False)],
             "rejects": [json.dumps(rejects)]}
        )


def score_chunks_ray(
    vertical: str,
    chunks: Iterable[pd.DataFrame],
    done: set[int],
    parts: Path,
    bundle: Any,
    root: Any,
    args,
    keep,
    actors: int,
    bar,
    window: int = 8,
) -> int:
    import ray

    from common.batch import _number, _write_atomic

    if not ray.is_initialized():
        env = {
            k: v
            for k, v in os.environ.items()
            if k in ("VERTICALS_EXTRA_PLUGINS", "VERTICALS_HOME", "PYTHONPATH")
        }
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH")]))
        ray.init(
            num_cpus=max(actors, 1),
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": env},
        )
    read, pending = 0, []

    def flush() -> None:
        if not pending:
            return
        ds = ray.data.from_pandas(pending).map_batches(
            _ScoringActor,
            batch_format="pandas",
            batch_size=None,
            concurrency=actors,
            fn_constructor_kwargs={
                "vertical": vertical,
                "bundle": str(bundle),
                "root": str(root) if root else None,
                "args": args,
                "keep": keep,
            },
        )
        for out in ds.iter_batches(batch_format="pandas", batch_size=None):
            for rec in out.to_dict("records"):
                rows = pd.read_parquet(io.BytesIO(rec["rows"]))
                _write_atomic(rows, json.loads(rec["rejects"]), parts, int(rec["__chunk"]))
        pending.clear()

    for idx, chunk in enumerate(chunks):
        if "__row" not in chunk:
            chunk = _number(chunk, read)
        read += len(chunk)
        bar.update(len(chunk))
        if idx in done:
            continue
        chunk = chunk.copy()
        chunk["__chunk"] = idx
        # Ray serialises with Arrow: keep object columns plain Python (numeric columns, such as
        # prepared feature rows, go as they are: exact and without a Python object per cell)
        obj = [c for c in chunk.columns if chunk[c].dtype == object]
        if obj:
            chunk[obj] = pd.DataFrame([clean_row(r) for r in chunk[obj].to_dict("records")],
                                      index=chunk.index, columns=obj)
        pending.append(chunk)
        if len(pending) >= window:
            flush()
    flush()
    return read
