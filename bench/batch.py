"""Batch-scoring benchmark: `common.batch.score_file` (what `verticals score` runs) on a Parquet
file vs the bare model on the same rows pre-loaded as one tensor. Reports rows/s of each and
their ratio (target ≥ 0.8).

The model is the bench MLP vertical (`bench-mlp`: 32 float columns f0..f31 → label and
probability), served by the same Predictor as in bench/serving.py.

    python bench/batch.py --quick --out /tmp/batch.json
    python bench/batch.py --out bench/results/batch.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._models import MLP_IN, MlpPredictor, forward, write_bundle  # noqa: E402
from bench._proc import machine  # noqa: E402
from common.batch import score_file  # noqa: E402
from common.registry import get_vertical  # noqa: E402


def make_input(path: Path, rows: int) -> torch.Tensor:
    x = np.random.default_rng(0).standard_normal((rows, MLP_IN), dtype=np.float32)
    pd.DataFrame(x, columns=[f"f{i}" for i in range(MLP_IN)]).to_parquet(path, index=False)
    return torch.from_numpy(x)


def bare(net: torch.nn.Module, x: torch.Tensor, batch: int) -> float:
    """Rows/s of the same forward over the pre-loaded tensor, `batch` rows per call."""
    t0 = time.perf_counter()
    for i in range(0, len(x), batch):
        forward(net, x[i : i + batch])
    return len(x) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="20k rows, 1 run (< 1 min)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/batch.json"))
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--chunk-size", type=int, default=50_000)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both sides")
    ap.add_argument("--repeats", type=int, default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = a.rows or (20_000 if a.quick else 200_000)
    repeats = a.repeats or (1 if a.quick else 3)
    get_vertical("bench-mlp")  # import the plugins once, outside the timed runs
    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        work = Path(tmp)
        write_bundle("mlp", work)
        inp = work / "rows.parquet"
        x = make_input(inp, rows)
        predictor = MlpPredictor.load("latest", root=work)
        bs = predictor.batch_job_size
        bare(predictor.net, x, bs)  # warm-up
        ours, base, summaries = [], [], []
        for i in range(repeats):
            out = work / f"scores-{i}.parquet"
            t0 = time.perf_counter()
            summary = score_file("bench-mlp", inp, out, root=work, chunk_size=a.chunk_size,
                                 progress=False)
            ours.append(round(rows / (time.perf_counter() - t0), 1))
            base.append(round(bare(predictor.net, x, bs), 1))
            summaries.append(summary)
            assert summary["scored"] == rows, summary
            print(f"round {i + 1}: score_file {ours[-1]} rows/s, bare {base[-1]} rows/s",
                  file=sys.stderr)
    result = {
        "results": {
            "score_file": {"rows_per_s": statistics.median(ours), "runs": ours},
            "bare": {"rows_per_s": statistics.median(base), "runs": base, "batch": bs},
        },
        "ratio": round(statistics.median(ours) / statistics.median(base), 4),
        "target": 0.8,
        "model": "bench-mlp: MLP 32-256-256-2 on 32 float32 columns",
        "input": f"Parquet, {rows} rows x {MLP_IN} float columns",
        "settings": {"engine": "local", "chunk_size": a.chunk_size, "torch_threads": a.threads,
                     "repeats": repeats, "quick": a.quick,
                     "timed": "the whole score_file call (read, validate, predict, write, "
                              "merge), plugins imported beforehand",
                     "summary": summaries[-1]},
        "machine": machine(),
        "duration_s": round(time.time() - t_start, 1),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"score_file {result['results']['score_file']['rows_per_s']:.0f} rows/s, bare "
          f"{result['results']['bare']['rows_per_s']:.0f} rows/s, ratio {result['ratio']}")


if __name__ == "__main__":
    main()
