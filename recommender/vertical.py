"""The recommender vertical: registration, CLI hooks (train / evaluate / score with an
all-users mode) and example requests."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from common.artifacts import Bundle, load_bundle
from common.errors import InvalidInput
from common.registry import register_vertical
from common.vertical import ExampleRequest, Vertical
from recommender.api import build_router
from recommender.evaluate import PROTOCOLS
from recommender.predictor import RecommenderPredictor

__all__ = ["RecommenderVertical"]


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user-col", default=None, help="user id column (default: auto-detect)")
    p.add_argument("--item-col", default=None, help="item id column (default: auto-detect)")
    p.add_argument("--rating-col", default=None, help="rating column (optional)")
    p.add_argument("--time-col", default=None, help="timestamp column (optional)")
    p.add_argument("--implicit-threshold", type=float, default=None,
                   help="keep ratings >= this as interactions (default: keep all)")


@register_vertical("recommender")
class RecommenderVertical(Vertical):
    title = "implicit-feedback recommendation: top-K, similar items, batch top-K"
    predictor_cls = RecommenderPredictor
    protocols = PROTOCOLS
    monitor_task = "ranking"  # realised hit rate of fed-back items (recommender/monitoring.py)

    def build_router(self, served):
        return build_router(served)

    def example_requests(self) -> list[ExampleRequest]:
        # ids of the embedded synthetic data ("u0".., "i0"..): exist in every default bundle
        return [
            ExampleRequest({"user_id": "u1", "k": 5, "exclude_seen": True}, "GET",
                           "/recommender/v1/users/u1/recommendations",
                           params={"k": 5, "exclude_seen": "true"}),
            ExampleRequest({"item_id": "i3", "k": 5}, "GET", "/recommender/v1/items/i3/similar",
                           params={"k": 5}),
            ExampleRequest({"user_id": "new-user", "k": 3, "exclude_seen": True}, "GET",
                           "/recommender/v1/users/new-user/recommendations",
                           params={"k": 3}),
        ]

    # ---- training ---------------------------------------------------------------------------
    def train_default(self, root: Path, preset: str = "demo") -> Bundle:
        from recommender.train import default_data, train_bundle

        return train_bundle(default_data(preset), root, preset=preset)

    def add_train_args(self, parser: argparse.ArgumentParser) -> None:
        _data_args(parser)

    def train(self, args: argparse.Namespace) -> Bundle:
        if not args.data:
            return self.train_default(Path(args.root), preset=args.preset)
        from recommender.data import load_interactions, load_titles, to_implicit
        from recommender.train import train_bundle

        df = load_interactions(args.data, args.user_col, args.item_col, args.rating_col,
                               args.time_col)
        preset = args.preset if args.preset in ("test", "demo", "quick", "full") else "demo"
        return train_bundle(to_implicit(df, args.implicit_threshold), args.root, preset=preset,
                            titles=load_titles(args.data), source=str(args.data))

    # ---- evaluation -------------------------------------------------------------------------
    def add_evaluate_args(self, parser: argparse.ArgumentParser) -> None:
        _data_args(parser)
        parser.add_argument("--grid", default=None, choices=["test", "quick", "full"],
                            help="model-selection grid (default: the --preset)")

    def evaluate(self, args: argparse.Namespace) -> dict[str, Any]:
        from recommender.evaluate import evaluate_args

        return evaluate_args(args)

    gate_metric = "ndcg_at_10"

    def gate_score(self, bundle: Bundle, data: Path, args) -> dict[str, float]:
        from recommender.gate import gate_score

        return gate_score(bundle, data)

    # ---- batch scoring ----------------------------------------------------------------------
    def add_score_args(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--all-users", action="store_true",
                            help="top-k for every user of the bundle (INPUT is ignored)")
        parser.add_argument("--k", type=int, default=10, help="items per user (default 10)")
        parser.add_argument("--include-seen", action="store_true",
                            help="do not filter items the user has seen")
        parser.add_argument("--retrieval", default="exact", choices=["exact", "faiss"],
                            help="exact batched matmul, or a faiss inner-product index")

    def predictor_options(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"retrieval": getattr(args, "retrieval", "exact") or "exact"}

    def read_batch(self, path: Path, chunk_size: int, args: argparse.Namespace | None
                   ) -> Iterator[pd.DataFrame] | None:
        if not (args is not None and getattr(args, "all_users", False)):
            return None
        bundle = load_bundle(getattr(args, "bundle", "latest") or "latest",
                             vertical="recommender", root=getattr(args, "root", None))
        users = bundle.read_json("ids.json")["users"]
        return (pd.DataFrame({"user_id": users[s : s + chunk_size]})
                for s in range(0, len(users), chunk_size))

    def row_to_payload(self, row: dict[str, Any], args: argparse.Namespace | None) -> Any:
        """A row of a user-id table (column user_id / user / userId) → a request; rows that
        already are requests (JSONL of payloads) pass through."""
        row = {k: v for k, v in row.items() if v is not None}  # empty cells of mixed inputs
        if "item_id" in row and "user_id" not in row:
            return row
        uid = next((row[c] for c in ("user_id", "user", "userId", "uid") if c in row), None)
        if uid is None:
            raise InvalidInput("user_id", f"no user_id column in row (have {sorted(row)})")
        payload = {"user_id": uid}
        for key in ("k", "exclude_seen"):
            if key in row and row[key] is not None:
                payload[key] = row[key]
        if args is not None:
            payload.setdefault("k", getattr(args, "k", 10) or 10)
            if getattr(args, "include_seen", False):
                payload["exclude_seen"] = False
        return payload
