"""The Predictor: the one seam between a model and both serving and batch scoring.

Contract (in the spirit of LitServe's LitAPI):
- `setup(device)` loads the bundle's model once;
- `decode(request)` turns one validated pydantic request into a model-ready item, raising
  `InvalidInput(field, reason)` for anything pydantic could not check;
- `predict_batch(items)` runs the model on a list, one output per item;
- `encode(output)` turns one output into the pydantic response;
- `health()` says whether the model can answer.

REST routes and `verticals score` both call `run(requests)`, so online and offline answers are
identical by construction.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ValidationError

from common.artifacts import Bundle, load_bundle
from common.device import pick_device
from common.errors import InvalidInput, NotReady, VerticalsError

__all__ = ["Predictor", "parse_request", "validation_to_invalid"]


def validation_to_invalid(err: ValidationError) -> InvalidInput:
    """First pydantic error → InvalidInput naming the dotted field path and the reason."""
    first = err.errors()[0]
    field = ".".join(str(p) for p in first.get("loc", ())) or None
    return InvalidInput(field, first.get("msg", "invalid value"))


def parse_request(model: type[BaseModel], payload: Any) -> BaseModel:
    """Validate a dict (or pass through an instance) against `model`, raising InvalidInput."""
    if isinstance(payload, model):
        return payload
    try:
        return model.model_validate(payload)
    except ValidationError as err:
        raise validation_to_invalid(err) from None


class Predictor(ABC):
    """Base class for a vertical's predictor. Subclasses set the class attributes below."""

    vertical: ClassVar[str]
    request_model: ClassVar[type[BaseModel]]
    response_model: ClassVar[type[BaseModel]]
    max_batch_size: int = 32  # dynamic batching cap when serving
    max_wait_ms: float = 2.0
    batch_job_size: int = 256  # items per predict_batch call in `verticals score`

    def __init__(self, bundle: Bundle, **options: Any):
        self.bundle = bundle
        self.options = options
        self.device: torch.device | None = None
        self.ready = False

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        ref: str | Path = "latest",
        root: str | Path | None = None,
        device: str | None = None,
        **options: Any,
    ) -> Predictor:
        """Load a bundle (a path, or `latest` for this vertical under `root`) and set it up."""
        bundle = load_bundle(ref, vertical=cls.vertical, root=root)
        predictor = cls(bundle, **options)
        predictor.setup(pick_device(device))
        predictor.ready = True
        return predictor

    # ---- the contract -------------------------------------------------------------------
    @abstractmethod
    def setup(self, device: torch.device) -> None:
        """Load weights from `self.bundle` onto `device`."""

    def decode(self, request: BaseModel) -> Any:
        """One validated request → one model-ready item (default: the request itself)."""
        return request

    @abstractmethod
    def predict_batch(self, items: list[Any]) -> list[Any]:
        """Run the model on a list of items; one output per item, in order."""

    def encode(self, output: Any) -> BaseModel:
        """One output → the response model (default: validate a dict)."""
        if isinstance(output, self.response_model):
            return output
        return self.response_model.model_validate(output)

    def health(self) -> bool:
        return self.ready

    # ---- lifecycle hooks (the server swapping bundles; see common/serving/follow.py) ------
    def warmup(self, examples: list[Any] | None = None) -> None:
        """Run the model once before it takes traffic, off the request path: a bundle that
        cannot answer its vertical's example requests is refused before it serves. The default
        answers `examples` (payload dicts) when the predictor writes no state; a stateful one
        overrides this without touching its store (it runs beside the live model)."""
        if examples and not self.stateful:
            for r in self.run_each([self.parse(p) for p in examples]):
                if isinstance(r, VerticalsError):
                    raise r

    def adopt_state(self, old: Predictor) -> None:
        """Take over the live state of the predictor this one replaces (e.g. a feature store
        or online events), so a swap loses nothing (default: nothing to take)."""

    def close(self) -> None:
        """Release what `setup` opened once this predictor is swapped out (default: nothing)."""

    # ---- the two halves of a batch (see common/serving/rollout.py) ------------------------
    # A request field that names the caller, for sticky canary routing (e.g. "customer_id").
    routing_field: ClassVar[str | None] = None
    # True when `prepare` writes state (fraud's feature store): a shadow then scores the
    # production model's prepared inputs instead of running the request again.
    stateful: ClassVar[bool] = False

    def prepare(self, items: list[Any]) -> Any:
        """The stateful half of `predict_batch` (default: the items unchanged)."""
        return items

    def predict_prepared(self, prepared: Any) -> list[Any]:
        """The stateless half: prepared inputs → outputs (default: `predict_batch`)."""
        return self.predict_batch(prepared)

    def select_prepared(self, prepared: Any, idx: list[int]) -> Any:
        """The prepared inputs of items `idx` (default: list indexing)."""
        return [prepared[i] for i in idx]

    def shadow_answer(
        self, requests: list[BaseModel], prepared: Any, primary: Predictor
    ) -> list[BaseModel | VerticalsError]:
        """Answer as a shadow, writing no state: a stateless predictor runs the requests
        itself (its own decoding: tokenizer, image size); a stateful one scores `primary`'s
        prepared inputs."""
        if not self.stateful:
            return self.run_each(requests)
        return [self.encode(o) for o in self.predict_prepared(prepared)]

    # ---- monitoring (common/monitoring) ------------------------------------------------------
    def monitor_record(self, request: BaseModel, output: Any, response: BaseModel
                       ) -> dict[str, Any] | None:
        """What the prediction log keeps of one answered item, or None (the default: this
        predictor does not monitor). `output` is the raw `predict_batch` output (it may carry
        more than `encode` keeps). Return {"id": business id or None, "features": {name:
        float | str | list[float]} (names as in the bundle's profile), "score": float | None,
        "probs": list[float] | None, "prediction": str | None}. PHI-free, and cheap: it runs
        on the serving path."""
        return None

    # ---- conveniences shared by REST, batch and library users ----------------------------
    def info(self) -> dict[str, Any]:
        m = self.bundle.manifest
        return {
            "vertical": self.vertical,
            "name": m["name"],
            "version": m["version"],
            "sha256": m["files"].get("model.safetensors", {}).get("sha256"),
            "metrics": m.get("metrics", {}),
            "created_at": m.get("created_at"),
        }

    def parse(self, payload: Any) -> BaseModel:
        return parse_request(self.request_model, payload)

    def run(self, requests: list[BaseModel]) -> list[BaseModel]:
        """decode → predict_batch → encode for already-parsed requests (one batch)."""
        if not self.ready:
            raise NotReady(f"{self.vertical} predictor is not set up")
        items = [self.decode(r) for r in requests]
        outputs = self.predict_batch(items)
        if len(outputs) != len(items):
            raise RuntimeError(f"predict_batch returned {len(outputs)} outputs for {len(items)}")
        return [self.encode(o) for o in outputs]

    def run_each(
        self, requests: list[BaseModel], shadow: Any = None, monitor: Any = None
    ) -> list[BaseModel | VerticalsError]:
        """Like `run`, but a request that fails `decode` gets its own error and the others are
        still answered (used by the batcher and the batch job). A `shadow`
        (`common.serving.rollout.ShadowRunner`) is offered the batch once it is answered, and
        so is a `monitor` hook: `monitor(self, requests, where, outputs, results)`
        (`common.monitoring.Monitor.bind`)."""
        if not self.ready:
            raise NotReady(f"{self.vertical} predictor is not set up")
        results: list[BaseModel | VerticalsError | None] = [None] * len(requests)
        items, where = [], []
        for i, r in enumerate(requests):
            try:
                items.append(self.decode(r))
                where.append(i)
            except VerticalsError as e:
                results[i] = e
        if items:
            prepared = self.prepare(items)
            outputs = self.predict_prepared(prepared)
            if len(outputs) != len(items):
                raise RuntimeError(f"predict_batch returned {len(outputs)} for {len(items)} items")
            for i, o in zip(where, outputs, strict=True):
                try:
                    results[i] = self.encode(o)
                except VerticalsError as e:
                    results[i] = e
            if monitor is not None:
                monitor(self, requests, where, outputs, results)
            if shadow is not None:
                shadow.offer(self, requests, where, prepared, results)
        return results  # type: ignore[return-value]

    def predict(self, payloads: list[Any]) -> list[dict[str, Any]]:
        """Library entry point: plain dicts in, plain JSON-able dicts out."""
        return [r.model_dump(mode="json") for r in self.run([self.parse(p) for p in payloads])]
