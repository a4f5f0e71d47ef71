"""The two bench models, their request bodies and decoding, shared by every server under test
so that all of them do exactly the same work per request; plus a bench-local vertical that
serves them through the real core (`create_app(predictors=...)`).

- `mlp`: a small MLP on a JSON body `{"x": [32 floats]}`;
- `resnet`: torchvision ResNet-18 (random init, 2 classes) on a 3×64×64 float32 image sent as
  base64 in JSON `{"tensor_b64": "..."}`.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from common.artifacts import BundleWriter, fingerprint
from common.batch_io import numeric_columns
from common.errors import InvalidInput
from common.predictor import Predictor
from common.registry import register_vertical
from common.vertical import ExampleRequest, Vertical

MODELS = ("mlp", "resnet")
MLP_IN = 32
IMG = (3, 64, 64)
PATHS = {"mlp": "/bench/v1/mlp", "resnet": "/bench/v1/resnet"}
# The dynamic-batching settings of our server, per model (documented in the README table).
BATCHING = {"mlp": {"max_batch_size": 64, "max_wait_ms": 1.0},
            "resnet": {"max_batch_size": 16, "max_wait_ms": 2.0}}


class MlpRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x: list[float] = Field(min_length=MLP_IN, max_length=MLP_IN)


class ImageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tensor_b64: str = Field(description="base64 of a float32 3x64x64 array, C-order")


class Prediction(BaseModel):
    label: int
    probability: float


REQUESTS: dict[str, type[BaseModel]] = {"mlp": MlpRequest, "resnet": ImageRequest}


def set_threads() -> None:
    """The same torch thread count in every server process (env BENCH_TORCH_THREADS, set by
    bench/serving.py per model; unset: torch's default, one per core)."""
    n = os.environ.get("BENCH_TORCH_THREADS")
    if n:
        torch.set_num_threads(int(n))


def build_model(model: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if model == "mlp":
        net: torch.nn.Module = torch.nn.Sequential(
            torch.nn.Linear(MLP_IN, 256), torch.nn.ReLU(),
            torch.nn.Linear(256, 256), torch.nn.ReLU(),
            torch.nn.Linear(256, 2),
        )
    elif model == "resnet":
        from torchvision.models import resnet18

        net = resnet18(weights=None, num_classes=2)
    else:
        raise ValueError(f"unknown bench model {model!r}; use one of {MODELS}")
    return net.eval()


def example_input(model: str, batch: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    shape = (batch, MLP_IN) if model == "mlp" else (batch, *IMG)
    return torch.randn(shape, generator=g)


def request_body(model: str) -> bytes:
    """The JSON body every client request carries (the same bytes for every server)."""
    x = example_input(model)[0].numpy()
    if model == "mlp":
        return json.dumps({"x": [round(float(v), 5) for v in x]}).encode()
    raw = np.ascontiguousarray(x, dtype=np.float32).tobytes()
    return json.dumps({"tensor_b64": base64.b64encode(raw).decode()}).encode()


def decode(model: str, req: BaseModel) -> np.ndarray:
    """Validated request → one float32 input array (no batch dim). numpy, not torch.tensor:
    building a tensor from a Python list costs ~15 µs, np.asarray ~2 µs."""
    if model == "mlp":
        return np.asarray(req.x, dtype=np.float32)  # type: ignore[attr-defined]
    try:
        raw = base64.b64decode(req.tensor_b64, validate=True)  # type: ignore[attr-defined]
    except ValueError:
        raise InvalidInput("tensor_b64", "not valid base64") from None
    if len(raw) != 4 * IMG[0] * IMG[1] * IMG[2]:
        raise InvalidInput("tensor_b64", f"expected {IMG} float32, got {len(raw)} bytes")
    return np.frombuffer(raw, dtype=np.float32).reshape(IMG)


def to_batch(items: list[np.ndarray]) -> torch.Tensor:
    """Decoded items → one batch tensor (a copy: frombuffer arrays are read-only)."""
    return torch.from_numpy(np.stack(items))


@torch.inference_mode()
def forward_arrays(net: torch.nn.Module, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """One forward on a batch → (labels, probabilities of the label) as arrays."""
    prob, label = torch.softmax(net(batch), -1).max(-1)
    return label.numpy(), prob.numpy().astype(np.float64)


def forward(net: torch.nn.Module, batch: torch.Tensor) -> list[dict[str, Any]]:
    """One forward on a batch → one plain dict per row (one tolist, no per-row tensor ops)."""
    label, prob = forward_arrays(net, batch)
    return [{"label": lb, "probability": pr} for lb, pr in zip(label.tolist(), prob.tolist(),
                                                              strict=True)]


def write_bundle(model: str, root: Path) -> Path:
    """Publish the model's (random-init) weights as a bundle of the bench vertical."""
    w = BundleWriter(root, f"bench-{model}", f"bench-{model}")
    w.save_weights(build_model(model).state_dict())
    return w.publish(f"bench._models.build_model:{model}", {"model": model},
                     data_fingerprint=fingerprint("bench: random init")).path


class _BenchPredictor(Predictor):
    model: str

    def setup(self, device: torch.device) -> None:
        set_threads()
        self.net = build_model(self.model)
        self.net.load_state_dict(self.bundle.state_dict())
        self.net.eval()

    def decode(self, request: BaseModel) -> np.ndarray:
        return decode(self.model, request)

    def predict_batch(self, items: list[np.ndarray]) -> list[dict[str, Any]]:
        return forward(self.net, to_batch(items))


class MlpPredictor(_BenchPredictor):
    vertical = "bench-mlp"
    model = "mlp"
    request_model = MlpRequest
    response_model = Prediction
    max_batch_size = BATCHING["mlp"]["max_batch_size"]
    max_wait_ms = BATCHING["mlp"]["max_wait_ms"]
    batch_job_size = 1024


class ResnetPredictor(_BenchPredictor):
    vertical = "bench-resnet"
    model = "resnet"
    request_model = ImageRequest
    response_model = Prediction
    max_batch_size = BATCHING["resnet"]["max_batch_size"]
    max_wait_ms = BATCHING["resnet"]["max_wait_ms"]


PREDICTORS: dict[str, type[_BenchPredictor]] = {"mlp": MlpPredictor, "resnet": ResnetPredictor}


class _BenchVertical(Vertical):
    model: str

    def build_router(self, served):
        req_model = REQUESTS[self.model]
        router = APIRouter(tags=["bench"])

        async def predict(req):
            return await served.predict(req)

        predict.__annotations__["req"] = req_model  # a real class: annotations here are strings

        router.add_api_route(PATHS[self.model], predict, methods=["POST"],
                             response_model=Prediction)
        return router

    def example_requests(self) -> list[ExampleRequest]:
        payload = json.loads(request_body(self.model))
        return [ExampleRequest(payload, "POST", PATHS[self.model], payload)]

    def train_default(self, root: Path, preset: str = "demo"):
        from common.artifacts import load_bundle

        return load_bundle(write_bundle(self.model, root))

    def row_to_payload(self, row: dict[str, Any], args: Any) -> Any:
        if self.model == "mlp" and "x" not in row:  # tabular input: columns f0..f31
            return {"x": [row[f"f{i}"] for i in range(MLP_IN)]}
        return row

    def score_columns(self, predictor, chunk, args):
        """Tabular MLP input (columns f0..f31): validate and score the chunk column-wise."""
        if self.model != "mlp" or "x" in chunk:
            return None
        x, ok, rejects = numeric_columns(chunk, [f"f{i}" for i in range(MLP_IN)])
        step = max(1, predictor.batch_job_size)
        parts = [forward_arrays(predictor.net, torch.from_numpy(x[i : i + step]))
                 for i in range(0, len(x), step)]
        label = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, np.int64)
        prob = np.concatenate([p[1] for p in parts]) if parts else np.empty(0)
        scores = pd.DataFrame({"row": chunk["__row"].to_numpy()[ok], "label": label,
                               "probability": prob})
        return scores, rejects


@register_vertical("bench-mlp")
class MlpVertical(_BenchVertical):
    title = "bench: MLP"
    model = "mlp"
    predictor_cls = MlpPredictor


@register_vertical("bench-resnet")
class ResnetVertical(_BenchVertical):
    title = "bench: ResNet-18 at 64 px"
    model = "resnet"
    predictor_cls = ResnetPredictor
