"""Training a bundle: select the model on validation folds of the data (MS Recommenders'
stratified splitter, seeds 7, 8, 9 by preset), refit the winner on all of it, publish the
bundle."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd

from common.artifacts import Bundle, fingerprint
from recommender.bundle import write_bundle
from recommender.data import encode, synthetic_interactions, to_implicit
from recommender.select import _name, fit_spec, select, stratified_folds

__all__ = ["train_bundle", "default_data", "DEFAULT_SIZES"]
log = logging.getLogger(__name__)
# embedded default data per preset: "test" must train in seconds, "demo" in about a minute
DEFAULT_SIZES = {"test": {"n_users": 300, "n_items": 200, "per_user": 25},
                 "demo": {"n_users": 1000, "n_items": 600, "per_user": 30}}


def default_data(preset: str) -> pd.DataFrame:
    return synthetic_interactions(**DEFAULT_SIZES.get(preset, DEFAULT_SIZES["demo"]), seed=0)


def train_bundle(df: pd.DataFrame, root: str | Path, preset: str = "demo",
                 titles: dict[str, str] | None = None, source: str = "synthetic") -> Bundle:
    """Select on validation, refit on everything, publish. `df` is already implicit."""
    t0 = time.perf_counter()
    df = to_implicit(df)
    enc = encode(df)
    winner, table, _ = select(stratified_folds(df, enc, preset), preset)
    X = enc.matrix(df)
    model = fit_spec(winner, X, None, seed=0, T=enc.times(df))
    chosen = next((r for r in table if r["model"] == _name(winner)), {})
    metrics = {f"val_{k}": v for k, v in chosen.items()
               if k in ("precision_at_10", "recall_at_10", "ndcg_at_10", "map_at_10")}
    metrics["train_time_s"] = round(time.perf_counter() - t0, 2)
    log.info("recommender: %s selected, bundle metrics %s", _name(winner), metrics)
    return write_bundle(root, model, enc, X, titles or {}, metrics,
                        fingerprint(df[["user_id", "item_id"]]),
                        {"selected": _name(winner), "preset": preset, "data": source,
                         "validation": table})
