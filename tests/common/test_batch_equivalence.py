"""For every registered vertical: a batch job resumed after an interruption, and the same job on
Ray actors, give the answers of a clean local run, value by value (DESIGN.md: a batch answer
never depends on the engine, the chunk size, the actor count or an interruption).

Exact equality: each run feeds the model the same rows in the same chunks; stateful features
are computed once per job (`Vertical.prepare_batch`), never per chunk or per actor."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import common.batch
from common.batch import score_file
from common.registry import get_vertical, list_verticals

ROOT = Path(__file__).resolve().parents[2]
CHUNK = 2
VERTICALS = list_verticals()


class Killed(Exception):
    pass


@pytest.fixture(scope="module", params=VERTICALS)
def clean(request, tmp_path_factory):
    """(vertical, bundle root, input, clean local output, its rejects): the examples at least
    three times over (repeats included: a stateful vertical must answer them as a retry)."""
    name = request.param
    tmp = tmp_path_factory.mktemp(f"equiv-{name}")
    get_vertical(name).train_default(tmp / "bundles", preset="test")
    examples = [ex.payload for ex in get_vertical(name).example_requests()]
    payloads = examples * max(3, 6 // len(examples) + 1)  # at least 7 rows: 4 chunks
    src = tmp / "requests.jsonl"
    src.write_text("".join(json.dumps(p) + "\n" for p in payloads))
    s = score_file(name, src, tmp / "clean.parquet", root=tmp / "bundles", chunk_size=CHUNK)
    assert s["read"] == s["scored"] == len(payloads) > 2 * CHUNK
    return name, tmp / "bundles", src, pd.read_parquet(tmp / "clean.parquet"), rejects(s)


def rejects(summary) -> str:
    return Path(summary["rejects"]).read_text()


def test_resumed_run_equals_clean_run(clean, tmp_path, monkeypatch):
    name, root, src, want, want_rejects = clean
    real = common.batch._write_atomic

    def write(df, rej, parts, idx):  # a kill after the first chunk: its part file on disk
        if idx > 0:
            raise Killed(f"killed before chunk {idx} was written")
        real(df, rej, parts, idx)

    out = tmp_path / "resumed.parquet"
    monkeypatch.setattr(common.batch, "_write_atomic", write)
    with pytest.raises(Killed):
        score_file(name, src, out, root=root, chunk_size=CHUNK)
    monkeypatch.undo()
    s = score_file(name, src, out, root=root, chunk_size=CHUNK)  # a fresh predictor, as a rerun
    assert s["resumed_chunks"] == 1
    pd.testing.assert_frame_equal(pd.read_parquet(out), want, check_exact=True)
    assert rejects(s) == want_rejects




@pytest.mark.slow
def test_ray_run_equals_clean_run(clean, tmp_path, ray_session):
    name, root, src, want, want_rejects = clean
    out = tmp_path / "ray.parquet"
    s = score_file(name, src, out, root=root, chunk_size=CHUNK, engine="ray", ray_actors=2)
    assert s["engine"] == "ray"
    pd.testing.assert_frame_equal(pd.read_parquet(out), want, check_exact=True)
    assert rejects(s) == want_rejects
