"""The recommender gate: NDCG@10 (and HR@10) of an existing bundle's top-10, as served (seen
items filtered, through the Predictor), against held-out interactions.

DATA is any interaction file `load_interactions` reads (user, item[, rating, timestamp]); each
user's distinct items in it are that user's relevant set. Only users the bundle knows are
scored (others would get the popularity fallback, which says nothing about the model); items
the bundle does not know still count in |R_u|, so a bundle cannot gain by a smaller catalogue.
Use interactions neither bundle trained on: an item a bundle has seen for the user is
filtered from its answer and can never hit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from common.artifacts import Bundle
from common.errors import InvalidInput

__all__ = ["gate_score", "K"]
K = 10


def gate_score(bundle: Bundle, data: str | Path) -> dict[str, float]:
    from recommender.data import load_interactions
    from recommender.metrics import ranking_metrics
    from recommender.predictor import RecommenderPredictor

    name = Path(data).name
    df = load_interactions(data).drop_duplicates(["user_id", "item_id"])
    if df.empty:
        raise InvalidInput("data", f"{name}: no interactions")
    pred = RecommenderPredictor(bundle)
    pred.setup(torch.device("cpu"))
    known = df["user_id"].isin(pred.enc.user_index)
    users = sorted(df.loc[known, "user_id"].unique())
    if not users:
        raise InvalidInput("data", f"{name}: none of its {df['user_id'].nunique()} users is "
                                   "known to the bundle")
    n_items = pred.enc.n_items
    top = np.full((len(users), K), n_items, dtype=np.int64)  # n_items: an empty slot, no hit
    for s in range(0, len(users), pred.batch_job_size):
        items = [pred.decode(pred.parse({"user_id": u, "k": K}))
                 for u in users[s : s + pred.batch_job_size]]
        for j, out in enumerate(pred.predict_batch(items)):
            idx = [pred.enc.item_index[it["item_id"]] for it in out["items"]]
            top[s + j, : len(idx)] = idx
    held = df[known]
    row = held["user_id"].map({u: r for r, u in enumerate(users)}).to_numpy()
    col = held["item_id"].map(pred.enc.item_index)
    ok = col.notna().to_numpy()
    relevant = sp.csr_matrix((np.ones(int(ok.sum()), np.float32),
                              (row[ok], col[ok].astype(np.int64).to_numpy())),
                             shape=(len(users), n_items + 1))
    n_rel = np.bincount(row, minlength=len(users))
    m = ranking_metrics(top, relevant, K, n_relevant=n_rel)
    return {f"ndcg_at_{K}": m[f"ndcg_at_{K}"], f"hr_at_{K}": m[f"hr_at_{K}"],
            f"recall_at_{K}": m[f"recall_at_{K}"], "users": float(len(users)),
            "unknown_users": float(df["user_id"].nunique() - len(users))}
