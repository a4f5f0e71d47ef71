"""The recommender Predictor: top-k for a user (seen items filtered, popularity fallback for
users the model cannot personalise, and the response says so) or items similar to an item.

State beyond the bundle: events posted to `/events` (`record_events`) join the users' histories
at once — for history-based models (EASE, item-kNN) they change the scores too; for all models
they join the seen-filter. They run in the model thread (`served.call`), so they never race a
batch.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from common.errors import NotFound
from common.predictor import Predictor
from recommender.bundle import read_bundle
from recommender.monitoring import record_features
from recommender.retrieval import FaissIndex, exact_topk
from recommender.schemas import Event, EventsResponse, RecommendRequest, RecommendResponse

__all__ = ["RecommenderPredictor"]


class RecommenderPredictor(Predictor):
    vertical = "recommender"
    request_model = RecommendRequest
    response_model = RecommendResponse
    max_batch_size = 256
    max_wait_ms = 2.0
    batch_job_size = 1024  # all-users scoring: one matrix product per 1024 users

    @torch.no_grad()
    def setup(self, device: torch.device) -> None:
        self.model, self.enc, self.seen, self.popularity, self.titles = read_bundle(self.bundle)
        self.model_name = self.model.kind
        self.extra_seen: dict[str, set[int]] = {}  # user id → item indices from events
        self.retrieval = self.options.get("retrieval", "exact")
        self.index = FaissIndex(self.model.item_vectors()) if self.retrieval == "faiss" else None
        self.log_popularity = np.log1p(self.popularity.numpy().astype(np.float64))  # monitoring

    # ---- lifecycle --------------------------------------------------------------------------
    routing_field = "user_id"  # canary routing: one user always sees the same model

    def adopt_state(self, old: Predictor) -> None:
        """Keep the events posted to the bundle this one replaces: re-keyed by item id, since
        item indices differ between bundles (items the new bundle lacks are dropped)."""
        if not isinstance(old, RecommenderPredictor):
            return
        ids = {i: item for item, i in old.enc.item_index.items()}
        for user, idxs in old.extra_seen.items():
            mine = {self.enc.item_index.get(ids[i]) for i in idxs}
            mine.discard(None)
            if mine:
                self.extra_seen.setdefault(user, set()).update(int(i) for i in mine)

    # ---- history ----------------------------------------------------------------------------
    def history(self, user_id: str) -> np.ndarray:
        """Sorted item indices the user has interacted with (training + posted events)."""
        u = self.enc.user_index.get(user_id, -1)
        base = self.seen.indices[self.seen.indptr[u] : self.seen.indptr[u + 1]] if u >= 0 \
            else np.zeros(0, dtype=np.int64)
        extra = self.extra_seen.get(user_id)
        if extra:
            base = np.union1d(base, np.fromiter(extra, dtype=np.int64))
        return np.asarray(base, dtype=np.int64)

    def parse_events(self, events: list[dict[str, Any]]) -> list[Event]:
        """Validate plain dicts as events (library use of `record_events`)."""
        from common.predictor import parse_request
        from recommender.schemas import EventsRequest

        return parse_request(EventsRequest, {"events": events}).events

    def record_events(self, events: list[Event]) -> EventsResponse:
        """Add events to the seen-filter (and history). Duplicates are counted, not errors."""
        accepted = dup = 0
        unknown: list[str] = []
        users = set()
        for e in events:
            i = self.enc.item_index.get(e.item_id)
            if i is None:
                unknown.append(e.item_id)
                continue
            hist = self.history(e.user_id)
            if np.isin(i, hist).item():
                dup += 1
                continue
            self.extra_seen.setdefault(e.user_id, set()).add(int(i))
            accepted += 1
            users.add(e.user_id)
        return EventsResponse(accepted=accepted, duplicates=dup,
                              unknown_items=sorted(set(unknown)), users_updated=len(users))

    # ---- the contract -----------------------------------------------------------------------
    def decode(self, request: RecommendRequest) -> dict[str, Any]:
        if request.item_id is not None:
            idx = self.enc.item_index.get(request.item_id)
            if idx is None:
                raise NotFound(f"unknown item_id {request.item_id!r}", field="item_id")
            return {"mode": "item", "req": request, "idx": int(idx)}
        uid = request.user_id
        return {"mode": "user", "req": request, "uidx": self.enc.user_index.get(uid, -1),
                "hist": self.history(uid)}

    @torch.no_grad()  # grad mode is per thread: never switch it off globally
    def predict_batch(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any] | None] = [None] * len(items)
        users = [n for n, it in enumerate(items) if it["mode"] == "user"]
        sims = [n for n, it in enumerate(items) if it["mode"] == "item"]
        if users:
            for n, res in zip(users, self._recommend([items[n] for n in users]), strict=True):
                out[n] = res
        if sims:
            for n, res in zip(sims, self._similar([items[n] for n in sims]), strict=True):
                out[n] = res
        return out  # type: ignore[return-value]

    def encode(self, output: dict[str, Any]) -> RecommendResponse:
        return RecommendResponse.model_validate(output)

    def monitor_record(self, request: RecommendRequest, output: dict[str, Any],
                       response: RecommendResponse) -> dict[str, Any] | None:
        """Known/unknown user, activity, popularity of the returned items, k
        (recommender.monitoring); the prediction is the returned ids as JSON. Similar-item
        requests have no user: not monitored."""
        if request.user_id is None:
            return None
        uid = request.user_id
        ids = [it.item_id for it in response.items]
        feats = record_features(self.enc.user_index.get(uid, -1) >= 0, len(self.history(uid)),
                                [self.enc.item_index[i] for i in ids], self.log_popularity,
                                request.k)
        return {"id": uid, "features": feats, "score": None, "probs": None,
                "prediction": json.dumps(ids)}

    # ---- internals --------------------------------------------------------------------------
    def _rows(self, hists: list[np.ndarray]) -> sp.csr_matrix:
        indptr = np.concatenate([[0], np.cumsum([len(h) for h in hists])])
        idx = np.concatenate(hists) if hists else np.zeros(0, np.int64)
        return sp.csr_matrix((np.ones(len(idx), np.float32), idx, indptr),
                             shape=(len(hists), self.enc.n_items))

    def _recommend(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        kmax = max(it["req"].k for it in items)
        hists = [it["hist"] for it in items]
        uidx = np.array([it["uidx"] for it in items], dtype=np.int64)
        if self.model.history_based:
            personal = np.array([len(h) > 0 for h in hists])
        else:
            personal = uidx >= 0
        rows = self._rows(hists)
        masked = self._rows([h if it["req"].exclude_seen else h[:0]
                             for h, it in zip(hists, items, strict=True)])
        top = np.full((len(items), kmax), -1, dtype=np.int64)
        val = np.full((len(items), kmax), -np.inf, dtype=np.float32)
        p = np.where(personal)[0]
        if len(p):
            if self.index is not None:
                q = self.model.user_vectors(rows[p], uidx[p])
                top[p], val[p] = self.index.search(q, kmax, masked[p])
            else:
                top[p], val[p] = exact_topk(self.model.scores(rows[p], uidx[p]), kmax, masked[p])
        f = np.where(~personal)[0]
        if len(f):
            pop = torch.log1p(self.popularity)[None, :].expand(len(f), -1)
            top[f], val[f] = exact_topk(pop, kmax, masked[f])
        results = []
        for n, it in enumerate(items):
            req = it["req"]
            res = self._answer(top[n, : req.k], val[n, : req.k], user_id=req.user_id)
            if not personal[n]:
                res["fallback"] = "popularity"
                res["reason"] = self._why_fallback(req.user_id, it)
            elif len(res["items"]) < req.k:
                res["reason"] = f"only {len(res['items'])} items left after the seen-filter"
            results.append(res)
        return results

    def _why_fallback(self, user_id: str, it: dict[str, Any]) -> str:
        if it["uidx"] < 0 and not len(it["hist"]):
            return "unknown user (not in the training data, no events): most popular items"
        if it["uidx"] < 0:
            return (f"user not in the training data; the {self.model_name} model cannot "
                    "personalise from events, which are only filtered out as seen")
        return "user has no interactions: most popular items"

    def _similar(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        kmax = max(it["req"].k for it in items)
        idx = np.array([it["idx"] for it in items], dtype=np.int64)
        q, v = self.model.similar_vectors(idx)
        self_mask = self._rows([np.array([i]) for i in idx])  # an item is not "like itself"
        top, val = exact_topk(q @ v.T, kmax, self_mask)
        return [self._answer(top[n, : it["req"].k], val[n, : it["req"].k],
                             item_id=it["req"].item_id) for n, it in enumerate(items)]

    def _answer(self, top: np.ndarray, val: np.ndarray, **ids: Any) -> dict[str, Any]:
        keep = top >= 0
        out = []
        for i, s in zip(top[keep], val[keep], strict=True):
            iid = str(self.enc.items[i])
            # 6 decimals: batched and single products may differ in the last float bits
            out.append({"item_id": iid, "score": round(float(s), 6),
                        "title": self.titles.get(iid)})
        return {**ids, "items": out, "fallback": None, "reason": None,
                "model": self.model_name, "model_version": self.bundle.version}
