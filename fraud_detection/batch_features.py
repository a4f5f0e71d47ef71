"""Fraud batch jobs: card and terminal histories computed once, in order; chunks scored stateless.

This is the fraud vertical's `prepare_batch` / `score_columns` pair. A job's answers must not
depend on its engine, chunk size, Ray actor count or an interruption (DESIGN.md). Replaying the
rows through the online store chunk by chunk did: a resumed run started from an empty history
and each Ray actor kept its own partial one. Instead `prepare_chunks`, once per job:

1. validates every row exactly as the API does (`parse` + `decode`: same rejects, field, reason);
2. computes the window features of all valid rows at once with `features.batch_aggregates` (the
   vectorised offline definitions; the parity tests tie them to both stores), over the store's
   prior state (`store.snapshot()`: the bundle's state for a fresh memory store, the shared
   state for Redis; read once per job and pinned in its parts folder, so a rerun reuses it)
   followed by the job's rows, all in (time, id) order;
3. yields the same chunks, each row carrying its feature row, so that `score_prepared` (here or
   on a Ray actor) runs only the stateless model.

Rules that make a rerun answer as the first run:
- a transaction id of the job replaces the store's record of that id for the whole job (a shared
  store may hold the job's own rows from an interrupted run); an identical record keeps its label;
- an identical duplicate row answers as its first copy (a retry, as online); a row reusing an
  earlier row's id with other values is rejected, naming that row.
With a shared (Redis) store the job then records its rows, in order, so that online scoring sees
them, as it sees transactions scored through the API; an in-process memory store is left as it
was (its state dies with the job, and a reused predictor keeps answering as before).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from common.batch_io import clean_row, parse_row
from common.errors import VerticalsError
from fraud_detection.features import Aggregates, batch_aggregates, derive
from fraud_detection.store import MemoryStore, Tx

if TYPE_CHECKING:
    from common.vertical import Vertical
    from fraud_detection.predictor import FraudPredictor

__all__ = ["prepare_chunks", "score_prepared", "FEATURE_PREFIX"]

FEATURE_PREFIX = "__x."  # feature columns of a prepared chunk
_OK, _FIELD, _REASON = "__ok", "__field", "__reason"
_TX = ("transaction_id", "seconds", "customer_id", "terminal_id", "cents")


def _validate(predictor: FraudPredictor, vertical: Vertical, df: pd.DataFrame,
              args: argparse.Namespace | None) -> tuple[pd.DataFrame, list, list]:
    """Per row, the API's own validation: (valid transactions with their position, and per
    position the reject field and reason, None when valid)."""
    fields: list[str | None] = [None] * len(df)
    reasons: list[str | None] = [None] * len(df)
    txs: list[tuple[int, ...]] = []
    records = df.drop(columns=["__row", "__source"]).to_dict("records")
    for pos, rec in enumerate(records):
        try:
            tx = predictor.decode(parse_row(predictor, vertical, clean_row(rec), args))
        except VerticalsError as e:
            fields[pos], reasons[pos] = e.field, e.message
            continue
        txs.append((tx.transaction_id, tx.seconds, tx.customer_id, tx.terminal_id, tx.cents, pos))
    valid = pd.DataFrame(np.array(txs, np.int64).reshape(-1, 6), columns=[*_TX, "pos"])
    return valid, fields, reasons


def _features(predictor: FraudPredictor, rows: pd.DataFrame, prior: pd.DataFrame,
              fraud: np.ndarray) -> np.ndarray:
    """Feature rows of `rows` (unique ids) after the store's `prior` rows, all in (time, id)
    order; `fraud`: the known labels carried over to `rows`."""
    sec = np.concatenate([prior["SECONDS"], rows["seconds"]]).astype(np.int64)
    tid = np.concatenate([prior["TRANSACTION_ID"], rows["transaction_id"]]).astype(np.int64)
    order = np.lexsort((tid, sec))
    cols = {
        "customer": np.concatenate([prior["CUSTOMER_ID"], rows["customer_id"]]),
        "terminal": np.concatenate([prior["TERMINAL_ID"], rows["terminal_id"]]),
        "cents": np.concatenate([prior["CENTS"], rows["cents"]]),
        "fraud": np.concatenate([prior["LABEL"].to_numpy() == 1, fraud]),
    }
    c = {k: np.asarray(v, np.int64)[order] for k, v in cols.items()}
    aggs = batch_aggregates(c["customer"], c["terminal"], sec[order], c["cents"], c["fraud"],
                            predictor.delay_days)
    mine = np.argsort(order)[len(prior):]  # where each job row sits in the sorted arrays
    aggs = Aggregates(*(a[mine] for a in aggs))
    cents = rows["cents"].to_numpy(np.int64)
    return derive(cents / 100.0, rows["seconds"].to_numpy(np.int64), aggs,
                  names=predictor.features)  # amounts in whole cents, as online


def _prior_state(predictor: FraudPredictor, workdir: Path | None) -> pd.DataFrame:
    """The store's state before the job: read once, pinned in the job's folder. A rerun must not
    read a shared store again: the first run recorded rows there, which prunes history older
    than their windows, history the job's earlier rows still need."""
    pinned = workdir / "fraud_prior_state.parquet" if workdir is not None else None
    if pinned is not None and pinned.exists():
        return pd.read_parquet(pinned)
    prior = predictor.store.snapshot()
    if pinned is not None:
        tmp = pinned.with_name(pinned.name + ".tmp")
        prior.to_parquet(tmp, index=False)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, pinned)  # whole or absent: a kill mid-write leaves no half state
    return prior


def prepare_chunks(
    predictor: FraudPredictor,
    vertical: Vertical,
    chunks: Iterable[pd.DataFrame],
    args: argparse.Namespace | None,
    keep: list[str] | None = None,
    workdir: Path | None = None,
) -> Iterator[pd.DataFrame]:
    """The job's chunks (same sizes and `__row`s) with a feature row each (see module doc);
    the store's prior state is pinned in `workdir` for a resumed run."""
    chunks = list(chunks)  # the fraud reader already holds the whole job (to sort it by time)
    if not chunks:
        return
    df = pd.concat(chunks, ignore_index=True)
    valid, fields, reasons = _validate(predictor, vertical, df, args)
    row_no = df["__row"].to_numpy()

    # duplicates: the first copy in time order is scored; identical later copies share its answer
    valid = valid.sort_values(["seconds", "pos"], kind="stable")
    first = valid.drop_duplicates("transaction_id", keep="first")
    later = valid[~valid.index.isin(first.index)].merge(
        first, on="transaction_id", suffixes=("", "_first"))
    same = np.all([later[k].to_numpy() == later[f"{k}_first"].to_numpy() for k in _TX[1:]],
                  axis=0) if len(later) else np.zeros(0, bool)
    for pos, first_pos in later.loc[~same, ["pos", "pos_first"]].to_numpy():
        fields[pos] = "transaction_id"
        reasons[pos] = (f"already used by row {row_no[first_pos]} with other values "
                        "(time, card, terminal or amount)")

    prior = _prior_state(predictor, workdir)
    ids = first["transaction_id"].to_numpy()
    stored = prior[prior["TRANSACTION_ID"].isin(ids)].set_index("TRANSACTION_ID")
    prior = prior[~prior["TRANSACTION_ID"].isin(ids)]
    fraud = np.zeros(len(first), bool)
    if len(stored):  # an identical stored record keeps its (late) label, as a retry would
        s = stored.reindex(ids)
        same_rec = np.all([s[k].to_numpy() == first[f].to_numpy() for k, f in
                           (("SECONDS", "seconds"), ("CUSTOMER_ID", "customer_id"),
                            ("TERMINAL_ID", "terminal_id"), ("CENTS", "cents"))], axis=0)
        fraud = same_rec & (s["LABEL"].to_numpy() == 1)

    x = np.full((len(df), len(predictor.features)), np.nan)
    if len(first):
        x[first["pos"].to_numpy()] = _features(predictor, first, prior, fraud)
    if same.any():
        x[later.loc[same, "pos"].to_numpy()] = x[later.loc[same, "pos_first"].to_numpy()]
    if not isinstance(predictor.store, MemoryStore):
        for t in first[list(_TX)].itertuples(index=False):  # in (time, id) order
            predictor.store.observe(Tx(*map(int, t)))

    tx_id = np.zeros(len(df), np.int64)
    tx_id[valid["pos"].to_numpy()] = valid["transaction_id"].to_numpy()
    ok = np.array([f is None for f in fields], bool)
    out = pd.DataFrame({"__row": df["__row"], "__source": df["__source"]})
    for k in keep or []:
        if k in df and k not in out:
            out[k] = df[k]
    out["transaction_id"] = tx_id
    out[_OK], out[_FIELD], out[_REASON] = ok, fields, reasons
    feats = pd.DataFrame(x, columns=[FEATURE_PREFIX + f for f in predictor.features])
    out = pd.concat([out, feats], axis=1)
    start = 0
    for c in chunks:
        yield out.iloc[start : start + len(c)].reset_index(drop=True)
        start += len(c)


def score_prepared(
    predictor: FraudPredictor, chunk: pd.DataFrame
) -> tuple[pd.DataFrame, list[dict[str, Any]]] | None:
    """Score a prepared chunk (stateless: the model on its feature rows); None if the chunk
    was not prepared (then the per-row path replays it through the store)."""
    if _OK not in chunk:
        return None
    ok = chunk[_OK].to_numpy(bool)
    bad = chunk.loc[~ok]
    rejects = [{"row": int(r), "source": s, "field": f, "reason": m} for r, s, f, m in
               zip(bad["__row"], bad["__source"], bad[_FIELD], bad[_REASON], strict=True)]
    good = chunk.loc[ok]
    # C order, as online: a column-major matrix takes other BLAS kernels (other last bits)
    x = np.ascontiguousarray(good[[FEATURE_PREFIX + f for f in predictor.features]], np.float64)
    ids = good["transaction_id"].tolist()
    step = max(1, predictor.batch_job_size)  # the net's reasons run faster in such slices
    answers = [a for i in range(0, len(ids), step)
               for a in predictor.answer(x[i : i + step], ids[i : i + step])]
    # the flattened response, as common.batch_io.flatten writes the per-row path's
    scores = pd.DataFrame({
        "row": good["__row"].to_numpy(),
        "transaction_id": [a["transaction_id"] for a in answers],
        "probability": [a["probability"] for a in answers],
        "decision": [a["decision"] for a in answers],
        "reasons": [json.dumps(a["reasons"], sort_keys=True) for a in answers],
        "model_version": [a["model_version"] for a in answers],
    })
    return scores, rejects
