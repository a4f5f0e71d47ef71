"""The `fraud` vertical: card-transaction risk scoring online (REST) and in batch.

    verticals train fraud [--preset demo] [--data transactions.parquet]
    verticals evaluate fraud --protocol handbook --data ../shared/data/fraud_handbook --out r.json
    verticals score fraud day.parquet scores.parquet
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from common.artifacts import Bundle
from common.errors import InvalidInput
from common.registry import register_vertical
from common.vertical import ExampleRequest, Vertical
from fraud_detection.predictor import FraudPredictor

__all__ = ["FraudVertical", "PRESETS", "parse_columns"]

# Simulator sizes per preset; every preset ends on 2018-09-30 so the examples (2018-10-01) follow
# the training data whichever preset trained the bundle.
PRESETS: dict[str, dict[str, Any]] = {
    "test": {"n_customers": 300, "n_terminals": 600, "n_days": 45,
             "compromised_terminals_per_day": 1, "compromised_customers_per_day": 1},
    "demo": {"n_customers": 1500, "n_terminals": 3000, "n_days": 75},
    "full": {"n_customers": 5000, "n_terminals": 10000, "n_days": 183},
}
_PRESET_XGB = {"test": {"n_estimators": 80}, "demo": {"n_estimators": 200}}
_END = pd.Timestamp("2018-10-01")
_HANDBOOK_TO_API = {"TRANSACTION_ID": "transaction_id", "TX_DATETIME": "timestamp",
                    "CUSTOMER_ID": "customer_id", "TERMINAL_ID": "terminal_id",
                    "TX_AMOUNT": "amount"}


def parse_columns(spec: str | None) -> dict[str, str]:
    """'my_ts=TX_DATETIME,amt=TX_AMOUNT' → {'my_ts': 'TX_DATETIME', 'amt': 'TX_AMOUNT'}."""
    out = {}
    for part in filter(None, (spec or "").split(",")):
        if "=" not in part:
            raise InvalidInput("columns", f"{part!r} is not SOURCE=TARGET")
        src, dst = (s.strip() for s in part.split("=", 1))
        out[src] = dst
    return out


def simulated(preset: str, seed: int = 0) -> pd.DataFrame:
    from fraud_detection.data import SimConfig, simulate

    if preset not in PRESETS:
        raise InvalidInput("preset", f"unknown preset {preset!r}: {', '.join(PRESETS)}")
    p = PRESETS[preset]
    start = (_END - pd.Timedelta(days=p["n_days"])).strftime("%Y-%m-%d")
    return simulate(SimConfig(**p, start_date=start), seed=seed)


@register_vertical("fraud")
class FraudVertical(Vertical):
    title = "card-transaction fraud scoring (XGBoost + feed-forward blend, online feature store)"
    predictor_cls = FraudPredictor
    protocols = ("handbook",)
    monitor_task = "binary"  # P(fraud); see fraud_detection/monitoring.py

    def build_router(self, served):
        from fraud_detection.api import build_router

        return build_router(served)

    def example_requests(self) -> list[ExampleRequest]:
        txs = [
            {"transaction_id": 90_000_001, "timestamp": "2018-10-01T08:15:00", "customer_id": 3,
             "terminal_id": 17, "amount": 42.5},
            {"transaction_id": 90_000_002, "timestamp": "2018-10-01T09:40:12", "customer_id": 3,
             "terminal_id": 17, "amount": 230.0},
            {"transaction_id": 90_000_003, "timestamp": "2018-10-01T11:02:59", "customer_id": 8,
             "terminal_id": 5, "amount": 12.99},
        ]
        return [ExampleRequest(payload=t, method="POST", path="/fraud/v1/score", body=t)
                for t in txs]

    # ---- training ------------------------------------------------------------------------
    def train_default(self, root: Path, preset: str = "demo") -> Bundle:
        from fraud_detection.bundle import train_and_publish

        df = simulated(preset)
        return train_and_publish(df, root, name=f"fraud-xgb-{preset}",
                                 xgb_params=_PRESET_XGB.get(preset),
                                 data_note=f"simulator preset={preset} seed=0")

    def add_train_args(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--columns", default=None,
                            help="map your column names: src=TX_DATETIME,amt=TX_AMOUNT,...")
        parser.add_argument("--reviews-per-day", type=float, default=None,
                            help="review threshold from a daily review budget (default: costs)")
        parser.add_argument("--cost-missed-fraud", type=float, default=150.0)
        parser.add_argument("--cost-review", type=float, default=5.0)
        parser.add_argument("--cost-false-block", type=float, default=50.0)

    def train(self, args: argparse.Namespace) -> Bundle:
        from fraud_detection.bundle import train_and_publish
        from fraud_detection.data import load_transactions

        if not getattr(args, "data", None):
            df, note = simulated(args.preset), f"simulator preset={args.preset} seed=0"
        else:
            df = load_transactions(args.data, parse_columns(getattr(args, "columns", None)),
                                   need_label=True)
            note = str(args.data)
        costs = {"missed_fraud": args.cost_missed_fraud, "review": args.cost_review,
                 "false_block": args.cost_false_block}
        return train_and_publish(df, Path(args.root), costs=costs, data_note=note,
                                 xgb_params=_PRESET_XGB.get(args.preset),
                                 reviews_per_day=args.reviews_per_day)

    # ---- evaluation ----------------------------------------------------------------------
    def add_evaluate_args(self, parser: argparse.ArgumentParser) -> None:
        from fraud_detection.evaluate import add_args

        add_args(parser)

    def evaluate(self, args: argparse.Namespace) -> dict[str, Any]:
        from fraud_detection.evaluate import run

        return run(args)

    gate_metric = "average_precision"

    def gate_score(self, bundle: Bundle, data: Path, args) -> dict[str, float]:
        from fraud_detection.gate import gate_score

        return gate_score(bundle, data)

    # ---- closed loop (`verticals retrain fraud --log DIR`, fraud_detection/retrain.py) ----
    can_retrain_from_log = True

    def retrain_from_log(self, rows: pd.DataFrame, base: Bundle, root: Path) -> Bundle:
        from fraud_detection.retrain import retrain_from_log

        return retrain_from_log(rows, base, root)

    def score_logged(self, bundle: Bundle, rows: pd.DataFrame) -> dict[str, float]:
        from fraud_detection.retrain import score_logged

        return score_logged(bundle, rows)

    # ---- batch scoring -------------------------------------------------------------------
    def add_score_args(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--columns", default=None,
                            help="map your column names to the handbook's (src=TX_DATETIME,...)")
        parser.add_argument("--store", default=None, choices=["memory", "redis"],
                            help="feature store (default: memory, or $VERTICALS_FRAUD_STORE)")
        parser.add_argument("--redis-url", default=None)

    def predictor_options(self, args: argparse.Namespace) -> dict[str, Any]:
        opts = {k: getattr(args, k, None) for k in ("store", "redis_url")}
        return {k: v for k, v in opts.items() if v}

    def read_batch(self, path: Path, chunk_size: int, args) -> Iterator[pd.DataFrame]:
        """All rows sorted by (timestamp, id) so that the job answers as a replay of the day
        through the API; `__row` keeps each row's position in the input."""
        from common.batch_io import iter_chunks

        df = pd.concat(list(iter_chunks(path, chunk_size)), ignore_index=True)
        cols = parse_columns(getattr(args, "columns", None))
        ts_col = next((c for c in ("timestamp", "TX_DATETIME") if c in df.columns), None)
        ts_col = next((s for s, d in cols.items() if d == "TX_DATETIME"), ts_col)
        id_col = next((c for c in ("transaction_id", "TRANSACTION_ID") if c in df.columns), None)
        id_col = next((s for s, d in cols.items() if d == "TRANSACTION_ID"), id_col)
        if ts_col in df.columns:
            key = pd.DataFrame({
                "t": pd.to_datetime(df[ts_col], errors="coerce", utc=True),
                "i": pd.to_numeric(df[id_col], errors="coerce") if id_col in df else 0,
            })
            df = df.loc[key.sort_values(["t", "i"], kind="stable", na_position="last").index]
        for s in range(0, len(df), chunk_size):
            yield df.iloc[s : s + chunk_size].reset_index(drop=True)

    def prepare_batch(self, predictor, chunks, args, keep=None,
                      workdir=None) -> Iterator[pd.DataFrame]:
        """Card and terminal histories for the whole job, once and in order, so that chunks
        score alike locally, on Ray actors and after a resume (fraud_detection.batch_features)."""
        from fraud_detection.batch_features import prepare_chunks

        return prepare_chunks(predictor, self, chunks, args, keep, workdir)

    def score_columns(self, predictor, chunk, args):
        """A prepared chunk: the stateless model on its feature rows, in one call."""
        from fraud_detection.batch_features import score_prepared

        return score_prepared(predictor, chunk)

    def row_to_payload(self, row: dict[str, Any], args) -> Any:
        cols = parse_columns(getattr(args, "columns", None)) if args is not None else {}
        row = {cols.get(k, k): v for k, v in row.items()}
        if any(k in row for k in _HANDBOOK_TO_API):  # handbook columns: keep only what we need
            row = {api: row.get(hb) for hb, api in _HANDBOOK_TO_API.items()}
        ts = row.get("timestamp")
        if hasattr(ts, "isoformat"):
            row["timestamp"] = ts.isoformat()
        return row
