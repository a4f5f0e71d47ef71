"""The two published protocols behind `verticals evaluate recommender`.

- `stratified` (Microsoft Recommenders' ML-100K benchmark): `python_stratified_split(ratio=0.75,
  filter_by="item", seed=42)`, every test interaction relevant, full ranking over all training
  items with each user's training items removed, k = 10: precision, recall, NDCG, MAP.
- `leave-last-out` (sequential recommenders): each user's latest interaction is the test item,
  full ranking, seen items removed: HR@10 and NDCG@10.

Hyper-parameters and the model (or blend) are chosen on validation carved from the training
part with the same protocol (stratified: the same splitter on the training rows, seeds 7, 8, 9,
metrics averaged over the three folds; leave-last-out: each user's last training interaction),
never on the test part.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from common.reports import build_report
from recommender.data import (
    encode,
    leave_last_out_split,
    load_interactions,
    stratified_split,
    synthetic_interactions,
    to_implicit,
)
from recommender.select import (
    VALIDATION_SEEDS,
    Fold,
    _name,
    fit_spec,
    score_model,
    select,
    stratified_folds,
)

__all__ = ["PROTOCOLS", "split_for", "run_protocol", "evaluate_args"]
log = logging.getLogger(__name__)
PROTOCOLS = ("stratified", "leave-last-out")
PUBLISHED = {  # MS Recommenders' ML-100K benchmark table (P@10 / R@10 / NDCG@10)
    "stratified": {
        "bpr": {"precision_at_10": 0.389, "recall_at_10": 0.217, "ndcg_at_10": 0.445},
        "lightgcn": {"precision_at_10": 0.359, "recall_at_10": 0.196, "ndcg_at_10": 0.416},
        "sar": {"precision_at_10": 0.341, "recall_at_10": 0.185, "ndcg_at_10": 0.394},
        "bivae": {"precision_at_10": 0.408, "recall_at_10": 0.221, "ndcg_at_10": 0.469},
    }
}
GOALS = {"stratified": {"precision_at_10": 0.44, "ndcg_at_10": 0.50}}


def split_for(protocol: str, df: pd.DataFrame, seed: int = 42) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, held-out) under `protocol`."""
    if protocol == "stratified":
        return stratified_split(df, ratio=0.75, filter_by="item", seed=seed)
    if protocol == "leave-last-out":
        return leave_last_out_split(df)
    raise ValueError(f"unknown protocol {protocol!r}; known: {PROTOCOLS}")


def run_protocol(df: pd.DataFrame, protocol: str, preset: str = "quick", seeds: int = 1,
                 k: int = 10) -> dict[str, Any]:
    """Select on validation, refit on train, score on test. Returns per-seed metrics,
    baselines (every model kind at its validated setting, popularity included) and details."""
    train, test = split_for(protocol, df)
    enc = encode(train)
    X, X_test = enc.matrix(train), enc.matrix(test)
    T = enc.times(train)  # training timestamps only: the test rows' times are never read
    # |relevant| counts every test interaction of a known user, also items unseen in training
    # (no model can rank them, but MS Recommenders counts them in recall/NDCG/MAP)
    counts = test["user_id"].map(enc.user_index).dropna().astype(int).value_counts()
    n_rel = np.zeros(enc.n_users, dtype=np.int64)
    n_rel[counts.index.to_numpy()] = counts.to_numpy()
    if protocol == "stratified":
        folds = stratified_folds(train, enc, preset)
    else:
        sub, val = split_for(protocol, train)
        folds = [Fold(enc.matrix(sub), enc.matrix(val), enc.times(sub))]
    t0 = time.perf_counter()
    winner, table, best = select(folds, preset, seed=0)
    select_s = time.perf_counter() - t0
    runs, cache = [], {}
    for seed in range(seeds):
        t0 = time.perf_counter()
        model = fit_spec(winner, X, None, seed, cache, T=T)
        train_s = time.perf_counter() - t0
        m = score_model(model, X, X_test, k, n_rel)
        runs.append({"seed": seed, **m, "train_time_s": round(train_s, 3)})
    baselines = {}
    for kind, spec in best.items():  # winner parts fitted above are reused, not refitted
        model = fit_spec(spec, X, None, 0, cache, T=T)
        m = score_model(model, X, X_test, k, n_rel)
        baselines[kind] = {**m, "train_time_s": round(model.fit_time_s_, 3),
                           "model": _name(spec)}
    return {
        "runs": runs,
        "baselines": baselines,
        "selected": winner,
        "selected_name": _name(winner),
        "validation": table,
        "select_time_s": round(select_s, 2),
        "sizes": {"interactions": len(df), "train": len(train), "test": len(test),
                  "validation_folds": len(folds), "validation_train": folds[0].X_sub.nnz,
                  "validation": folds[0].X_val.nnz,
                  "users": enc.n_users, "items": enc.n_items},
    }


def load_eval_data(args) -> tuple[pd.DataFrame, str]:
    """The dataset named by --data (any supported format), or the synthetic default."""
    if args.data:
        df = load_interactions(args.data, args.user_col, args.item_col, args.rating_col,
                               args.time_col)
        name = str(args.data)
    else:
        df, name = synthetic_interactions(seed=0), "synthetic(seed=0)"
    return to_implicit(df, args.implicit_threshold), name


def evaluate_args(args) -> dict[str, Any]:
    """`verticals evaluate recommender --protocol P --data PATH --out report.json`."""
    started = time.time()
    protocol = args.protocol or "stratified"
    df, name = load_eval_data(args)
    if args.bundle:
        log.warning("--bundle is ignored: both protocols refit on their own training split")
    grid_name = getattr(args, "grid", None) or args.preset
    res = run_protocol(df, protocol, preset=grid_name, seeds=args.seeds or 1)
    keep = ("precision_at_10", "recall_at_10", "ndcg_at_10", "map_at_10", "map", "hr_at_10",
            "train_time_s", "recommend_time_s", "n_users")
    if protocol == "leave-last-out":
        keep = ("hr_at_10", "ndcg_at_10", "precision_at_10", "map_at_10", "train_time_s",
                "recommend_time_s", "n_users")
    runs = [{"seed": r["seed"], **{k: r[k] for k in keep}} for r in res["runs"]]
    baselines = {n: {k: v for k, v in b.items() if k in keep or k == "model"}
                 for n, b in res["baselines"].items()}
    config = {
        "preset": args.preset, "grid": grid_name, "k": 10,
        "implicit_threshold": args.implicit_threshold,
        "split": {"stratified": "python_stratified_split(ratio=0.75, filter_by='item', seed=42)",
                  "leave-last-out": "latest interaction per user"}[protocol],
        "validation": "same splitter on the training part (seeds "
        f"{', '.join(map(str, VALIDATION_SEEDS[:res['sizes']['validation_folds']]))}; "
        "metrics averaged over the folds)"
        if protocol == "stratified" else "each user's last training interaction",
        "selected_model": res["selected_name"], "selected_spec": res["selected"],
        "map_definitions": {"map_at_10": "AP@10 / min(10, |relevant|) (common.metrics)",
                            "map": "AP@10 / |relevant| (MS Recommenders `map`)"},
    }
    extra = {"validation": res["validation"], "select_time_s": res["select_time_s"],
             "sizes": res["sizes"], "published": PUBLISHED.get(protocol, {}),
             "goals": GOALS.get(protocol, {})}
    if args.data and Path(args.data).exists():
        extra["data_path"] = str(Path(args.data).resolve())
    return build_report("recommender", protocol, name, runs, per="per_seed",
                        baselines=baselines, config=config, started=started, extra=extra)
