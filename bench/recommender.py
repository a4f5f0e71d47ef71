"""Recommender batch top-K benchmark: all users' top-10 in one batched product vs a naive loop.

    .venv/bin/python bench/recommender.py [--quick] [--out bench/results/recommender.json]

On ML-100K (../shared/data/movielens_100k, or the synthetic default when absent) an EASE
bundle is fitted and published to a temp store, then, medians of --repeats runs:
- `batched`: the Predictor's all-users path (what `verticals score --all-users` runs), one
  matrix product + seen-filter + topk per 1024 users;
- `score_job`: `verticals score recommender --all-users` end to end (Parquet out);
- `naive_predictor`: one Predictor call per user (what a per-user service loop does);
- `naive_numpy`: per user, scores = x_u·B, mask seen, argsort (a plain Python loop);
- `limit`: the bare product + topk on pre-built tensors (the physical floor of this model).
Regime: at 1.7k items the product is compute-light; batching wins by removing per-call
overhead (Python, pydantic, small-matrix dispatch), not by better FLOP use.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.batch import score_file  # noqa: E402
from recommender.bundle import write_bundle  # noqa: E402
from recommender.data import (  # noqa: E402
    encode,
    load_interactions,
    load_titles,
    synthetic_interactions,
    to_implicit,
)
from recommender.models import EASE  # noqa: E402
from recommender.predictor import RecommenderPredictor  # noqa: E402
from recommender.retrieval import exact_topk  # noqa: E402

ML100K = ROOT.parent / "shared" / "data" / "movielens_100k"


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, naive loop on a sample")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "recommender.json"))
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    repeats = args.repeats or (3 if args.quick else 5)
    if ML100K.exists():
        df, titles, data = to_implicit(load_interactions(ML100K)), load_titles(ML100K), "ml-100k"
    else:
        df = synthetic_interactions(n_users=943, n_items=1682, per_user=100, seed=0)
        titles, data = {}, "synthetic(943x1682)"
    enc = encode(df)
    X = enc.matrix(df)
    t0 = time.perf_counter()
    model = EASE(l2=300.0).fit(X)
    fit_s = time.perf_counter() - t0
    store = Path(tempfile.mkdtemp(prefix="rec-bench-"))
    write_bundle(store, model, enc, X, titles, {}, "bench")
    pred = RecommenderPredictor.load("latest", root=store, device="cpu")
    users = [str(u) for u in enc.users]
    k = args.k
    reqs = [pred.parse({"user_id": u, "k": k}) for u in users]

    def batched():
        out = []
        for s in range(0, len(reqs), pred.batch_job_size):
            out += pred.run(reqs[s : s + pred.batch_job_size])
        return out

    def limit():
        with torch.no_grad():
            return exact_topk(model.scores(X, np.arange(enc.n_users)), k, X)[0]

    sample = users if not args.quick else users[:: max(1, len(users) // 200)]

    def naive_predictor():
        return [pred.run([pred.parse({"user_id": u, "k": k})])[0] for u in sample]

    B = model.B_.numpy()

    def naive_numpy():
        out = []
        for u in range(len(sample)):
            row = X[u]
            s = np.asarray(row @ B).ravel()
            s[row.indices] = -np.inf
            out.append(np.argsort(-s)[:k])
        return out

    t_batch, res = timed(batched, repeats)
    t_limit, top = timed(limit, repeats)
    t_naive_pred, _ = timed(naive_predictor, max(1, repeats // 2))
    t_naive_np, _ = timed(naive_numpy, max(1, repeats // 2))
    scale = len(users) / len(sample)  # naive loops timed on a sample in --quick
    # the batched answer equals the bare product's top-k
    same = all([it.item_id for it in r.items] == [str(enc.items[i]) for i in t]
               for r, t in zip(res, top, strict=True))
    out_dir = Path(tempfile.mkdtemp(prefix="rec-bench-out-"))
    ns = argparse.Namespace(all_users=True, k=k, include_seen=False, retrieval="exact",
                            bundle="latest", root=str(store))
    t_job, summary = timed(lambda: score_file("recommender", out_dir / "in.csv",
                                              out_dir / "topk.parquet", root=store, args=ns,
                                              progress=False), 1)
    result = {
        "benchmark": "recommender all-users top-k",
        "data": data, "users": len(users), "items": enc.n_items, "k": k, "model": "ease(l2=300)",
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "repeats": repeats, "quick": args.quick,
        "fit_s": round(fit_s, 4),
        "seconds": {
            "batched": round(t_batch, 4),
            "limit": round(t_limit, 4),
            "score_job": round(t_job, 4),
            "naive_predictor": round(t_naive_pred * scale, 4),
            "naive_numpy": round(t_naive_np * scale, 4),
        },
        "naive_timed_on_users": len(sample),
        "batched_equals_limit_topk": bool(same),
        "score_job_summary": {k2: summary[k2] for k2 in ("read", "scored", "rejected")},
        "ratios": {
            "speedup_vs_naive_predictor": round(t_naive_pred * scale / t_batch, 1),
            "speedup_vs_naive_numpy": round(t_naive_np * scale / t_batch, 1),
            "vs_limit": round(t_limit / t_batch, 3),
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
