"""The column-at-a-time batch path (`Vertical.score_columns`) against the per-row path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common.batch import score_file
from common.batch_io import numeric_columns
from tests.common.toy_vertical import ToyVertical


def messy_frame(n: int = 60) -> pd.DataFrame:
    df = pd.DataFrame(np.random.default_rng(3).normal(size=(n, 4)), columns=list("abcd"))
    df["a"] = df["a"].astype(object)
    df.loc[4, "a"] = "n/a"
    df.loc[9, "c"] = None
    df.loc[11, "d"] = np.inf
    df["id"] = [f"tx-{i}" for i in range(n)]
    return df


def run(tmp_path: Path, root, columnar: bool, monkeypatch, name: str) -> tuple[pd.DataFrame, list]:
    monkeypatch.setattr(ToyVertical, "columnar", columnar)
    src = tmp_path / "in.csv"
    messy_frame().to_csv(src, index=False)
    out = tmp_path / f"{name}.parquet"
    s = score_file("toy", src, out, root=root, chunk_size=25, keep=["id"])
    rejects = [json.loads(x) for x in Path(s["rejects"]).read_text().splitlines()]
    return pd.read_parquet(out), rejects


def test_column_path_scores_what_the_row_path_scores(tmp_path, toy_root, monkeypatch):
    # the row path validates through pydantic; drop the id column it would reject as unknown
    monkeypatch.setattr(ToyVertical, "row_to_payload",
                        lambda self, row, args: {"x": [row[k] for k in "abcd"]})
    rows, row_rej = run(tmp_path, toy_root, False, monkeypatch, "rows")
    cols, col_rej = run(tmp_path, toy_root, True, monkeypatch, "cols")
    assert len(cols) == 57 and list(cols.columns) == list(rows.columns)
    pd.testing.assert_frame_equal(cols, rows, check_dtype=False)
    assert [r["row"] for r in col_rej] == [r["row"] for r in row_rej] == [4, 9, 11]
    assert [r["field"] for r in col_rej] == ["a", "c", "d"]
    assert cols.loc[cols["row"] == 12, "id"].item() == "tx-12"


def test_numeric_columns_reasons():
    chunk = pd.DataFrame({"__row": [0, 1, 2, 3], "__source": "f.csv",
                          "amount": [1.0, -2.0, None, 3.0], "n": ["1", "2", "3", "x"]})
    x, ok, rejects = numeric_columns(chunk, ["amount", "n"], minimum={"amount": 0.0})
    assert ok.tolist() == [True, False, False, False]
    assert x.dtype == np.float32 and x.tolist() == [[1.0, 1.0]]
    assert [(r["row"], r["field"]) for r in rejects] == [(1, "amount"), (2, "amount"), (3, "n")]
    assert rejects[0]["reason"] == "must be >= 0.0"
    _, ok, rejects = numeric_columns(chunk, ["amount", "missing"])
    assert not ok.any() and {r["field"] for r in rejects} <= {"amount", "missing"}
    assert sum(r["field"] == "missing" for r in rejects) == 3  # row 2 fails on amount first


@pytest.mark.parametrize("columnar", [True, False])
def test_empty_chunk_after_rejects(tmp_path, toy_root, monkeypatch, columnar):
    monkeypatch.setattr(ToyVertical, "columnar", columnar)
    src = tmp_path / "bad.csv"
    pd.DataFrame({"a": ["x"], "b": [1.0], "c": [1.0], "d": [1.0]}).to_csv(src, index=False)
    s = score_file("toy", src, tmp_path / "o.parquet", root=toy_root)
    assert (s["read"], s["scored"], s["rejected"]) == (1, 0, 1)
