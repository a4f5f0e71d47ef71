"""What recommender monitoring watches, for recommendations to users.

Per request: whether the user is known to the model ("known": in its training data; "unknown":
answered by the popularity fallback or from posted events only), the user's activity (the
interactions the model sees: training plus posted events), the mean log popularity of the items
returned, and k. The prediction is the JSON list of returned item ids; feedback (the item the
user then interacted with) gives the realised hit rate.

`request_features` gives these both at training time (the reference profile: the bundle's
model answering one request per training user, as served) and at serving time
(`RecommenderPredictor.monitor_record`). Similar-item requests carry no user and are not
monitored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import BaseModel, ConfigDict, Field

from recommender.schemas import ExternalId

__all__ = ["DEFAULT_K", "request_features", "record_features", "build_profile",
           "RecommenderFeedbackItem", "RecommenderFeedbackRequest"]

DEFAULT_K = 10  # the k of the reference requests (the route's default)
PROFILE_USERS = 2000  # training users sampled for the reference requests


def request_features(known: Sequence[bool], activity: Sequence[int],
                     returned: Sequence[Sequence[int]], log_pop: np.ndarray,
                     k: Sequence[int]) -> dict[str, Any]:
    """Per request: known/unknown user, activity, mean log popularity of the returned item
    indices (NaN when none), k."""
    pop = [float(log_pop[np.asarray(r, dtype=np.int64)].mean()) if len(r) else float("nan")
           for r in returned]
    return {"user": ["known" if kn else "unknown" for kn in known],
            "activity": np.asarray(activity, dtype=np.float64),
            "popularity": np.asarray(pop, dtype=np.float64),
            "k": np.asarray(k, dtype=np.float64)}


def record_features(known: bool, activity: int, returned: Sequence[int], log_pop: np.ndarray,
                    k: int) -> dict[str, Any]:
    cols = request_features([known], [activity], [returned], log_pop, [k])
    return {"user": cols["user"][0], "activity": float(cols["activity"][0]),
            "popularity": float(cols["popularity"][0]), "k": float(cols["k"][0])}


def build_profile(model: Any, X: sp.csr_matrix, metrics: dict[str, float],
                  seed: int = 0) -> dict[str, Any]:
    """The reference: the model answering top-DEFAULT_K (seen items excluded) for up to
    PROFILE_USERS training users, as `RecommenderPredictor` does."""
    from common.monitoring.profile import build_profile as build
    from common.monitoring.profile import categorical_ref, numeric_ref
    from recommender.retrieval import exact_topk

    X = X.tocsr()
    n = X.shape[0]
    users = np.sort(np.random.default_rng(seed).permutation(n)[:PROFILE_USERS])
    rows = X[users]
    tops = []
    with torch.no_grad():
        for s in range(0, len(users), 500):  # bounded memory on large catalogues
            part = rows[s:s + 500]
            tops.append(exact_topk(model.scores(part, users[s:s + 500]), DEFAULT_K, part)[0])
    top = np.concatenate(tops)
    log_pop = np.log1p(np.asarray(X.sum(axis=0)).ravel())
    cols = request_features([True] * len(users), np.diff(rows.indptr),
                            [t[t >= 0] for t in top], log_pop, [DEFAULT_K] * len(users))
    feats = {"user": categorical_ref(cols["user"]), "activity": numeric_ref(cols["activity"]),
             "popularity": numeric_ref(cols["popularity"]), "k": numeric_ref(cols["k"])}
    return build(feats, task="ranking", score=None, metrics=metrics)


class RecommenderFeedbackItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: ExternalId = Field(description="the user id of the recommendation, or its X-Request-ID")
    label: ExternalId = Field(description="the item id the user then interacted with")


class RecommenderFeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    feedback: list[RecommenderFeedbackItem] = Field(min_length=1, max_length=10_000)
