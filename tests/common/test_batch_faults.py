"""`verticals score` under faults: a disk that fills up mid-job (a real tmpfs) and input files
cut short. Each gives one clear error or a rejected row, never a corrupt output, and a rerun
after the fault is gone finishes with no duplicate and no gap (value by value vs a clean run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from common.cli import main

ROOT = Path(__file__).resolve().parents[2]


def frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(size=(n, 4)), columns=list("abcd"))


def score(src: Path, out: Path, root: Path, *extra: str) -> int:
    return main(["score", "toy", str(src), str(out), "--root", str(root), *extra])


def clean_run(src: Path, tmp_path: Path, root: Path, capsys=None) -> pd.DataFrame:
    out = tmp_path / "clean" / "out.parquet"
    assert score(src, out, root, "--chunk-size", "500") == 0
    if capsys is not None:
        capsys.readouterr()  # its summary is not the one under test
    return pd.read_parquet(out)


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def _mount(where: Path, size: str) -> None:
    where.mkdir()
    # CI runs as root: a real size-capped filesystem, no stand-in
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                   check=True, capture_output=True)


def _umount(where: Path) -> None:
    if subprocess.run(["umount", str(where)], capture_output=True).returncode:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_full_disk_is_one_error_and_a_rerun_resumes(tmp_path, toy_root, capsys):
    src = tmp_path / "in.parquet"
    frame(20_000).to_parquet(src)
    want = clean_run(src, tmp_path, toy_root, capsys)
    out_size = (tmp_path / "clean" / "out.parquet").stat().st_size
    disk = tmp_path / "disk"
    _mount(disk, "8m")
    try:
        # leave room for about half the output: the job fails after some chunks, not before
        filler = disk / "filler"
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        filler.write_bytes(b"\0" * (free - out_size // 2))
        out = disk / "out.parquet"
        assert score(src, out, toy_root, "--chunk-size", "500") == 2
        line = one_error_line(capsys)
        assert line.startswith(f"error: output: {out}: no space left on device"), line
        parts = disk / "out.parquet.parts"
        finished = sorted(parts.glob("part-*.parquet"))
        assert finished and len(finished) < 40  # it got somewhere, and did not get to the end
        assert not out.exists()  # nothing half-written is left as the output
        assert not list(disk.glob("*.tmp")) and not list(parts.glob(".*.tmp"))
        for f in finished:  # what it kept is whole
            assert pq.read_table(f).num_rows == 500

        filler.unlink()  # space is freed: the same command resumes
        capsys.readouterr()
        assert score(src, out, toy_root, "--chunk-size", "500") == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["resumed_chunks"] == len(finished)
        assert (summary["read"], summary["scored"], summary["rejected"]) == (20_000, 20_000, 0)
        pd.testing.assert_frame_equal(pd.read_parquet(out), want)
        assert not parts.exists()
    finally:
        _umount(disk)


def test_csv_cut_mid_line_rejects_that_row(tmp_path, toy_root, capsys):
    """CSV: a last line without its line end is a cut row (`0.123` cut to `0.1` still parses),
    so it is rejected with the reason; the rows before it are scored."""
    src = tmp_path / "in.csv"
    frame(30).to_csv(src, index=False)
    want = clean_run(src, tmp_path, toy_root, capsys)
    full = src.read_bytes()
    src.write_bytes(full[:-8])  # cut inside the last row's last number
    out = tmp_path / "out.parquet"
    assert score(src, out, toy_root, "--chunk-size", "8") == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["read"], summary["scored"], summary["rejected"]) == (30, 29, 1)
    [reject] = [json.loads(x) for x in Path(summary["rejects"]).read_text().splitlines()]
    assert (reject["row"], reject["field"]) == (29, "input")
    assert "cut short" in reject["reason"]
    pd.testing.assert_frame_equal(pd.read_parquet(out), want.iloc[:29])

    src.write_bytes(full)  # restored: the rerun answers every row once
    assert score(src, out, toy_root, "--chunk-size", "8") == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out), want)
    assert Path(summary["rejects"]).read_text() == ""


def test_jsonl_cut_last_line_is_a_rejected_row(tmp_path, toy_root, capsys):
    src = tmp_path / "in.jsonl"
    frame(12).to_json(src, orient="records", lines=True)
    want = clean_run(src, tmp_path, toy_root, capsys)
    full = src.read_bytes()
    src.write_bytes(full[: full.rindex(b",") + 3])  # the last object loses its end
    out = tmp_path / "out.parquet"
    assert score(src, out, toy_root, "--chunk-size", "5") == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["read"], summary["scored"], summary["rejected"]) == (12, 11, 1)
    [reject] = [json.loads(x) for x in Path(summary["rejects"]).read_text().splitlines()]
    assert reject["row"] == 11 and reject["field"] == "input"
    assert reject["reason"].startswith("input: line 12: not valid JSON")
    pd.testing.assert_frame_equal(pd.read_parquet(out), want.iloc[:11])
    src.write_bytes(full)
    assert score(src, out, toy_root, "--chunk-size", "5") == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out), want)


def test_parquet_cut_in_half_is_one_error_then_a_clean_rerun(tmp_path, toy_root, capsys):
    """A cut Parquet file has no footer: nothing in it can be trusted, so the file is refused
    (exit 2, one line, no traceback, in a real process); once restored, the same command runs
    (the failed start left no finished chunk to protect)."""
    src = tmp_path / "in.parquet"
    frame(300).to_parquet(src)
    want = clean_run(src, tmp_path, toy_root, capsys)
    full = src.read_bytes()
    src.write_bytes(full[: len(full) // 2])
    out = tmp_path / "out.parquet"
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "VERTICALS_EXTRA_PLUGINS": "tests.common.toy_vertical"}
    cmd = [sys.executable, "-m", "common.cli", "score", "toy", str(src), str(out),
           "--root", str(toy_root), "--chunk-size", "64"]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("error: input: in.parquet: cannot be read"), lines
    assert not out.exists()
    src.write_bytes(full)
    assert score(src, out, toy_root, "--chunk-size", "64") == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out), want)
