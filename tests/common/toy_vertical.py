"""A tiny vertical used only by the core's own tests: a 2-class MLP on 4 floats."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd
import torch
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from common.artifacts import Bundle, BundleWriter, fingerprint
from common.batch_io import numeric_columns
from common.errors import InvalidInput
from common.monitoring.feedback import FeedbackResult
from common.monitoring.profile import PROFILE_FILE
from common.predictor import Predictor
from common.registry import register_vertical
from common.vertical import ExampleRequest, Vertical


class ToyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x: list[float] = Field(min_length=4, max_length=4)


class ToyLabel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=128)
    label: int = Field(ge=0, le=1)


class ToyFeedback(BaseModel):
    model_config = ConfigDict(extra="forbid")
    feedback: list[ToyLabel] = Field(min_length=1, max_length=1000)


class ToyResponse(BaseModel):
    label: int
    probability: float
    model_version: str


def make_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


class ToyPredictor(Predictor):
    vertical = "toy"
    request_model = ToyRequest
    response_model = ToyResponse
    max_batch_size = 16
    calls: list[int] = []

    def setup(self, device):
        self.net = make_net()
        self.net.load_state_dict(self.bundle.state_dict())
        self.net.eval()

    def decode(self, request):
        if not all(math.isfinite(v) for v in request.x):
            raise InvalidInput("x", "NaN and infinity are not allowed")
        return torch.tensor(request.x)

    def predict_batch(self, items):
        type(self).calls.append(len(items))
        delay = self.options.get("delay_s")
        if delay:
            import time

            time.sleep(delay)
        with torch.no_grad():
            p = torch.softmax(self.net(torch.stack(items)), -1)
        return [{"label": int(r.argmax()), "probability": float(r.max()),
                 "model_version": self.bundle.version} for r in p]

    def monitor_record(self, request, output, response):
        p1 = output["probability"] if output["label"] == 1 else 1.0 - output["probability"]
        return {"id": None, "features": toy_features(request.x), "score": p1, "probs": None,
                "prediction": str(output["label"])}


def toy_features(x: list[float]) -> dict:
    """The monitored inputs of one toy request (the predictor and the profile share it)."""
    return {"a": x[0], "b": x[1], "c": x[2], "d": x[3], "sign": "pos" if x[0] >= 0 else "neg"}


@register_vertical("toy")
class ToyVertical(Vertical):
    title = "toy"
    predictor_cls = ToyPredictor
    monitor_task = "binary"

    def build_router(self, served):
        router = APIRouter(prefix="/toy/v1", tags=["toy"])

        @router.post("/predict", response_model=ToyResponse)
        async def predict(req: ToyRequest):
            return await served.predict(req)

        @router.post("/feedback", response_model=FeedbackResult)
        async def feedback(body: ToyFeedback):
            return await served.feedback([i.model_dump() for i in body.feedback])

        return router

    def example_requests(self):
        return [ExampleRequest(payload={"x": [0.1, 0.2, 0.3, 0.4]}, method="POST",
                               path="/toy/v1/predict", body={"x": [0.1, 0.2, 0.3, 0.4]})]

    def predictor_options(self, args):
        # lets the kill -9 resume test slow scoring down from a subprocess
        delay = os.environ.get("TOY_DELAY_S")
        return {"delay_s": float(delay)} if delay else {}

    def row_to_payload(self, row, args):
        if set(row) == {"a", "b", "c", "d"}:  # tabular input: four columns
            return {"x": [row["a"], row["b"], row["c"], row["d"]]}
        return row

    columnar = True  # tests switch the column-at-a-time batch path off to compare both

    def score_columns(self, predictor, chunk, args):
        if not self.columnar or not {"a", "b", "c", "d"} <= set(chunk.columns):
            return None
        x, ok, rejects = numeric_columns(chunk, list("abcd"))
        outs = predictor.predict_batch(list(torch.from_numpy(x))) if len(x) else []
        scores = pd.DataFrame({"row": chunk["__row"].to_numpy()[ok],
                               "label": [o["label"] for o in outs],
                               "probability": [o["probability"] for o in outs],
                               "model_version": [o["model_version"] for o in outs]})
        return scores, rejects

    def train_default(self, root: Path, preset: str = "demo") -> Bundle:
        w = BundleWriter(root, "toy", "toy-mlp")
        w.save_weights(make_net().state_dict())
        return w.publish("tests.common.toy_vertical.make_net", {"in": 4},
                         data_fingerprint=fingerprint("toy: no training data"))

    # ---- gate: accuracy of the MLP on a labelled CSV (columns a, b, c, d, label) --------------
    gate_metric = "accuracy"

    def gate_score(self, bundle, data, args):
        from common.metrics import accuracy

        if not Path(data).is_file():
            raise InvalidInput("gate", f"{Path(data).name}: no such file")
        if Path(data).suffix.lower() != ".csv":
            raise InvalidInput("gate", f"{Path(data).name}: not a CSV file")
        df = pd.read_csv(data)
        missing = [c for c in (*"abcd", "label") if c not in df.columns]
        if missing:
            raise InvalidInput("gate", f"{Path(data).name}: no column {missing[0]!r}")
        if df.empty:
            raise InvalidInput("gate", f"{Path(data).name}: no rows")
        net = make_net()
        net.load_state_dict(bundle.state_dict())
        with torch.no_grad():
            pred = net(torch.tensor(df[list("abcd")].to_numpy(), dtype=torch.float32)).argmax(1)
        return {"accuracy": accuracy(df["label"].to_numpy(), pred.numpy()), "n": float(len(df))}


def toy_labelled(n: int, seed: int) -> pd.DataFrame:
    """Labelled toy rows: label = [a + b > 0]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    df = pd.DataFrame(x.numpy(), columns=list("abcd"))
    df["label"] = (df["a"] + df["b"] > 0).astype(int)
    return df


def train_toy(root: Path, steps: int, profile: bool = False) -> Bundle:
    """A toy bundle fitted for `steps` full-batch Adam steps on toy_labelled data (0: the
    untrained net), so that bundles really differ in accuracy; with `profile`, carrying a
    monitoring reference profile built on held-out toy rows."""
    net = make_net()
    df = toy_labelled(512, seed=1)
    x = torch.tensor(df[list("abcd")].to_numpy())
    y = torch.tensor(df["label"].to_numpy())
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    w = BundleWriter(root, "toy", "toy-mlp")
    w.save_weights(net.state_dict())
    if profile:
        w.add_json(PROFILE_FILE, toy_profile(net))
    return w.publish("tests.common.toy_vertical.make_net", {"in": 4, "steps": steps},
                     data_fingerprint=fingerprint("toy", steps, profile))


def toy_profile(net: torch.nn.Module, n: int = 4000) -> dict:
    """Reference profile of the toy model on held-out rows: the features, the score, metrics."""
    from sklearn.metrics import roc_auc_score

    from common.monitoring.profile import build_profile, categorical_ref, numeric_ref

    df = toy_labelled(n, seed=2)
    x = df[list("abcd")].to_numpy()
    with torch.no_grad():
        p1 = torch.softmax(net(torch.tensor(x)), -1)[:, 1].numpy()
    feats = [toy_features(list(r)) for r in x]
    refs = {k: numeric_ref([f[k] for f in feats]) for k in "abcd"}
    refs["sign"] = categorical_ref([f["sign"] for f in feats])
    y = df["label"].to_numpy()
    metrics = {"accuracy": float(((p1 >= 0.5) == y).mean()), "roc_auc": roc_auc_score(y, p1)}
    return build_profile(refs, task="binary", score=numeric_ref(p1), metrics=metrics,
                         classes=["0", "1"])
