"""What a vertical provides to the core. Subclass `Vertical`, decorate with
`@register_vertical("name")`, and list the module under the `verticals.plugins` entry points."""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from common.artifacts import Bundle
from common.predictor import Predictor

if TYPE_CHECKING:
    import pandas as pd
    from fastapi import APIRouter

    from common.serving.served import ServedPredictor

__all__ = ["Vertical", "ExampleRequest"]


@dataclass
class ExampleRequest:
    """A valid predictor payload and the HTTP call that carries the same request.

    The contract tests check that the REST answer for (method, path, body) equals the Predictor's
    and the batch job's answer for `payload`.
    """

    payload: dict[str, Any]
    method: str
    path: str
    body: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)


class Vertical(ABC):
    name: ClassVar[str]  # set by @register_vertical
    title: ClassVar[str] = ""
    predictor_cls: ClassVar[type[Predictor]]
    protocols: ClassVar[tuple[str, ...]] = ()
    # True: `train`/`evaluate` take --work-dir (Trainer checkpoints, resumable long runs)
    resumable_training: ClassVar[bool] = False
    # what common/monitoring estimates and realises for this vertical: "binary",
    # "multiclass", "ranking" or "translation"; None: not monitored (a bundle profile's own
    # "task" takes precedence)
    monitor_task: ClassVar[str | None] = None

    # ---- serving ------------------------------------------------------------------------
    @abstractmethod
    def build_router(self, served: ServedPredictor) -> APIRouter:
        """The vertical's thin FastAPI router; full paths (e.g. '/fraud/v1/score')."""

    def openapi_schema_updates(self, predictor: Predictor) -> dict[str, Any]:
        """What only the loaded bundle knows, for the OpenAPI document: {component schema name:
        {property: JSON Schema keywords to add}}, e.g. the translation pair as enums
        (default: nothing)."""
        return {}

    @abstractmethod
    def example_requests(self) -> list[ExampleRequest]:
        """At least one valid request; the first is printed by `verticals demo`."""

    # ---- training -----------------------------------------------------------------------
    @abstractmethod
    def train_default(self, root: Path, preset: str = "demo") -> Bundle:
        """Train on the embedded default data and publish a bundle under `root`.

        presets: 'test' (seconds, for the test suite), 'demo' (`make demo`, about a minute).
        """

    def add_train_args(self, parser: argparse.ArgumentParser) -> None:
        """Options of `verticals train <vertical>` beyond --out/--preset/--data."""

    def train(self, args: argparse.Namespace) -> Bundle:
        """`verticals train <vertical>`; default: the embedded default at args.preset."""
        return self.train_default(Path(args.root), preset=args.preset)

    # ---- evaluation ---------------------------------------------------------------------
    def add_evaluate_args(self, parser: argparse.ArgumentParser) -> None:
        """Options of `verticals evaluate <vertical>` beyond the common ones."""

    def evaluate(self, args: argparse.Namespace) -> dict[str, Any]:
        """Run args.protocol and return a report dict (see common.reports.build_report)."""
        raise NotImplementedError(f"{self.name} has no evaluation protocol yet")

    # ---- champion/challenger gate (`verticals models promote V --gate DATA`) ---------------
    # the metric the gate compares (higher is better); None: this vertical has no gate
    gate_metric: ClassVar[str | None] = None

    def gate_score(self, bundle: Bundle, data: Path, args: argparse.Namespace | None
                   ) -> dict[str, float]:
        """Metrics of an existing bundle (no retraining) on labelled DATA in the vertical's own
        format: must hold `gate_metric`, may carry more for the printout. Data that does not
        fit raises InvalidInput before anything moves."""
        from common.errors import InvalidInput

        raise InvalidInput("gate", f"{self.name} has no gate")

    # ---- closed loop (`verticals retrain V --log DIR`, common/monitoring/retrain.py) -------
    can_retrain_from_log: ClassVar[bool] = False

    def retrain_from_log(self, rows: pd.DataFrame, base: Bundle, root: Path) -> Bundle:
        """Train and publish a candidate from labelled prediction-log rows in time order (log
        columns, `f_<feature>` inputs, `label` as JSON text), starting from `base`'s
        configuration."""
        raise NotImplementedError(f"{self.name}: retraining from the log is not supported yet")

    def score_logged(self, bundle: Bundle, rows: pd.DataFrame) -> dict[str, float]:
        """An existing bundle's metrics (holding `gate_metric`) on labelled log rows."""
        raise NotImplementedError(f"{self.name}: scoring logged rows is not supported yet")

    # ---- batch scoring ------------------------------------------------------------------
    def add_score_args(self, parser: argparse.ArgumentParser) -> None:
        """Options of `verticals score <vertical>` (e.g. --text-column)."""

    def predictor_options(self, args: argparse.Namespace) -> dict[str, Any]:
        """Keyword options passed to the Predictor from CLI args (serve and score)."""
        return {}

    def read_batch(
        self, path: Path, chunk_size: int, args: argparse.Namespace | None
    ) -> Iterator[pd.DataFrame] | None:
        """Chunks of request rows for `verticals score`, or None to use the common tabular
        reader (CSV / Parquet / JSONL / folder). Override for non-tabular inputs (images)."""
        return None

    def prepare_batch(
        self,
        predictor: Predictor,
        chunks: Iterable[pd.DataFrame],
        args: argparse.Namespace | None,
        keep: list[str] | None = None,
        workdir: Path | None = None,
    ) -> Iterable[pd.DataFrame]:
        """Called once per `verticals score` job on its whole stream of chunks, before any chunk
        is scored here or sent to a Ray actor (default: the chunks unchanged).

        A vertical whose answers depend on earlier rows (fraud's card and terminal histories)
        computes that state here, once and in order, and yields the same chunks (same sizes, same
        `__row`/`__source`, the `keep` columns) carrying what each row needs, so that scoring a
        chunk is stateless and a job answers alike whatever its engine, chunk size, actor count
        or interruption. It sees every chunk on every run, finished ones included (a resumed job
        must rebuild the same state); it must be deterministic. `workdir` (the job's parts folder:
        it survives a kill and goes when the job completes) pins what a rerun must reuse rather
        than read again, e.g. a shared store's state that the first run already changed.
        """
        return chunks

    def row_to_payload(self, row: dict[str, Any], args: argparse.Namespace | None) -> Any:
        """One input row → one predictor payload (default: the row itself)."""
        return row

    def score_columns(
        self, predictor: Predictor, chunk: pd.DataFrame, args: argparse.Namespace | None
    ) -> tuple[pd.DataFrame, list[dict[str, Any]]] | None:
        """Optional column-at-a-time batch path for tabular verticals: score a whole chunk
        (with `__row`/`__source` columns) without building a request per row.

        Return (scores with a `row` column and the response's flattened fields, reject records
        `{"row", "source", "field", "reason"}`), or None (the default) for the per-row path.
        It must score the same rows with the same values as the per-row path
        (`tests/common/test_batch_columns.py` checks every vertical that implements it).
        """
        return None
