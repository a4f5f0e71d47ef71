"""Batch scoring: formats, rejects, accounting, kill -9 resume, and the Ray engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common.batch import score_file
from common.errors import InvalidInput
from tests.common.toy_vertical import ToyPredictor

ROOT = Path(__file__).resolve().parents[2]


def frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(size=(n, 4)), columns=list("abcd"))


def expected(root, df: pd.DataFrame) -> list[dict]:
    p = ToyPredictor.load("latest", root=root)
    return p.predict([{"x": list(map(float, r))} for r in df[list("abcd")].to_numpy()])


def test_csv_with_bad_rows_goes_to_rejects(tmp_path, toy_root):
    df = frame(50)
    df.loc[7, "b"] = None  # missing → rejected, naming column b
    df["a"] = df["a"].astype(object)
    df.loc[12, "a"] = "oops"
    src = tmp_path / "in.csv"
    df.to_csv(src, index=False)
    out = tmp_path / "out.parquet"
    s = score_file("toy", src, out, root=toy_root, chunk_size=16)
    assert (s["read"], s["scored"], s["rejected"]) == (50, 48, 2)
    rejects = [json.loads(line) for line in Path(s["rejects"]).read_text().splitlines()]
    assert [r["row"] for r in rejects] == [7, 12]
    assert [r["field"] for r in rejects] == ["b", "a"]
    assert all(r["reason"] and r["source"] == "in.csv" for r in rejects)
    got = pd.read_parquet(out)
    assert got["row"].tolist() == [i for i in range(50) if i not in (7, 12)]
    good = df.drop(index=[7, 12]).astype(float)
    assert got.drop(columns="row").to_dict("records") == expected(toy_root, good)
    assert json.loads((tmp_path / "out.parquet.summary.json").read_text())["read"] == 50


def test_folder_of_mixed_formats_to_csv(tmp_path, toy_root):
    d = tmp_path / "in"
    d.mkdir()
    frame(10, 1).to_parquet(d / "a.parquet")
    frame(7, 2).to_csv(d / "b.csv", index=False)
    frame(5, 3).to_json(d / "c.jsonl", orient="records", lines=True)
    s = score_file("toy", d, tmp_path / "out.csv", root=toy_root, chunk_size=4, keep=["a"])
    assert (s["read"], s["scored"], s["rejected"]) == (22, 22, 0)
    got = pd.read_csv(tmp_path / "out.csv")
    assert got["row"].tolist() == list(range(22)) and "a" in got


def test_bad_arguments_name_the_field(tmp_path, toy_root):
    with pytest.raises(InvalidInput, match="output"):
        score_file("toy", tmp_path, tmp_path / "out.txt", root=toy_root)
    with pytest.raises(InvalidInput, match="does not exist"):
        score_file("toy", tmp_path / "missing.csv", tmp_path / "o.parquet", root=toy_root)


def _cli(args: list[str], env_extra: dict | None = None, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VERTICALS_EXTRA_PLUGINS":
           "tests.common.toy_vertical", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "common.cli", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.slow
def test_resume_after_kill_9_has_no_duplicates_and_no_gaps(tmp_path, toy_root):
    df = frame(600)
    src = tmp_path / "in.parquet"
    df.to_parquet(src)
    out = tmp_path / "out.parquet"
    args = ["score", "toy", str(src), str(out), "--root", str(toy_root), "--chunk-size", "50"]
    proc = _cli(args, {"TOY_DELAY_S": "0.15"})  # ~2 chunks/s: time to kill mid-run
    parts = tmp_path / "out.parquet.parts"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.glob("part-*.parquet"))) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(parts.glob("part-*.parquet")))
    assert 3 <= done_before < 12 and not out.exists()
    proc = _cli(args)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    summary = json.loads(stdout)
    assert summary["resumed_chunks"] >= done_before
    assert (summary["read"], summary["scored"], summary["rejected"]) == (600, 600, 0)
    got = pd.read_parquet(out)
    assert got["row"].tolist() == list(range(600))
    assert got.drop(columns="row").to_dict("records") == expected(toy_root, df)
    assert not parts.exists()


def test_cli_errors_are_one_line_and_nonzero(tmp_path, toy_root):
    proc = _cli(["score", "toy", str(tmp_path / "nope.csv"), str(tmp_path / "o.parquet"),
                 "--root", str(toy_root)])
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.strip().splitlines()[-1].startswith("error: input:")
    proc = _cli(["models", "show", "toy/latest", "--root", str(tmp_path)])
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "no complete bundle" in err.strip().splitlines()[-1]


@pytest.mark.slow
def test_ray_engine_matches_local(tmp_path, toy_root, monkeypatch):
    import ray  # a core dependency: a missing Ray fails the test, never skips it
    monkeypatch.setenv("VERTICALS_EXTRA_PLUGINS", "tests.common.toy_vertical")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    df = frame(300)
    df.loc[5, "c"] = None
    src = tmp_path / "in.parquet"
    df.to_parquet(src)
    local = score_file("toy", src, tmp_path / "local.parquet", root=toy_root, chunk_size=64)
    assert local["rejected"] == 1
    ray_s = score_file("toy", src, tmp_path / "ray.parquet", root=toy_root, chunk_size=64,
                       engine="ray", ray_actors=2)

    ray.shutdown()
    assert (ray_s["read"], ray_s["scored"], ray_s["rejected"]) == (300, 299, 1)
    a, b = pd.read_parquet(tmp_path / "local.parquet"), pd.read_parquet(tmp_path / "ray.parquet")
    pd.testing.assert_frame_equal(a, b)
    assert (tmp_path / "ray.parquet.rejects.jsonl").read_text() == (
        tmp_path / "local.parquet.rejects.jsonl").read_text()
