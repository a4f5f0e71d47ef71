"""Medical imaging throughput: images/s of the served model vs the bare model on tensors.

    .venv/bin/python bench/medical_throughput.py [--quick] \
        [--out bench/results/medical_throughput.json]

A bundle is trained on the synthetic phantoms (preset `test` with --quick, else `demo`; or use
--bundle PATH), then, in the same run:
- `bare`: the network alone on pre-built (N, 1, 28, 28) tensors, best batch size of 1..64 —
  the compute limit;
- `predictor`: `MedicalPredictor.predict` in-process on base64 PNG payloads (decode + resize +
  model + calibration), batches of 32;
- `noop`: a FastAPI endpoint that only parses the same JSON body into the request model — the
  HTTP and parsing floor;
- `served`: `verticals serve` (dynamic batching) under the lean load generator
  (bench/_loadgen.py, a separate process, `--concurrency` keep-alive connections).
`ratios.vs_limit` = served / min(bare, noop). Regime: a 28-px ResNet-18 is cheap per image, so
batching pays and per-request parsing (base64 + PNG decode + MONAI resize) is a large share.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._proc import PY, Server, free_port, load, machine  # noqa: E402
from common.registry import get_vertical  # noqa: E402
from medical_imaging.predictor import MedicalPredictor, PredictRequest  # noqa: E402
from medical_imaging.vertical import example_png  # noqa: E402


def noop_app():
    """The HTTP + parsing floor: validate the same JSON body, answer a constant."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/medical/v1/predict")
    async def predict(req: PredictRequest):
        return {"ok": len(req.image_base64) > 0}

    @app.get("/livez")
    async def livez():
        return {"status": "alive"}

    return app


def images_per_s(fn, n_images: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return n_images / statistics.median(times)


def bare(p: MedicalPredictor, repeats: int) -> dict:
    out = {}
    with torch.no_grad():
        for bs in (1, 8, 32, 64):
            x = torch.rand(bs, p.in_channels, p.image_size, p.image_size)
            p.net(x)  # warm-up (oneDNN primitive creation)
            n = max(1, 256 // bs)
            out[bs] = images_per_s(lambda x=x, n=n: [p.net(x) for _ in range(n)], n * bs, repeats)
    return {"by_batch": {str(k): round(v, 1) for k, v in out.items()},
            "best": round(max(out.values()), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small bundle, short windows (<1 min)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "medical_throughput.json"))
    ap.add_argument("--bundle", default=None, help="an existing medical bundle directory")
    ap.add_argument("--concurrency", type=int, default=32)
    a = ap.parse_args()
    t_start = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="bench-medical-"))
    duration, warmup, repeats = (4.0, 1.0, 3) if a.quick else (15.0, 3.0, 5)
    root = tmp / "store"
    if a.bundle:
        bundle_path = Path(a.bundle)
        root = bundle_path.parent.parent
    else:
        preset = "test" if a.quick else "demo"
        bundle_path = get_vertical("medical").train_default(root, preset).path
    p = MedicalPredictor.load(bundle_path)
    payload = {"image_base64": base64.b64encode(example_png(True)).decode(), "filename": "x.png"}
    body = tmp / "body.json"
    body.write_text(json.dumps(payload))

    results = {"bare": bare(p, repeats)}
    p.predict([payload] * 32)
    rate = images_per_s(lambda: p.predict([payload] * 32), 32, repeats)
    results["predictor"] = {"batch": 32, "images_per_s": round(rate, 1)}
    port = free_port()
    noop = Server("noop", [PY, "-m", "uvicorn", "bench.medical_throughput:noop_app", "--factory",
                           "--port", str(port), "--log-level", "warning", "--no-access-log"],
                  port, "/livez", {}, tmp)
    try:
        noop.wait_ready()
        results["noop"] = load(port, "/medical/v1/predict", body, a.concurrency, warmup, duration)
    finally:
        noop.stop()
    port = free_port()
    served = Server("served", [PY, "-m", "common.cli", "serve", "--verticals", "medical",
                               "--root", str(root), "--port", str(port)],
                    port, "/readyz", {"VERTICALS_DEVICE": "cpu"}, tmp)
    try:
        served.wait_ready(300)
        results["served"] = load(port, "/medical/v1/predict", body, a.concurrency, warmup,
                                 duration)
    finally:
        served.stop()
    limit = min(results["bare"]["best"], results["noop"]["rps"])
    srv = results["served"]["rps"]
    report = {
        "bench": "medical_throughput",
        "model": {"arch": p.bundle.model_config["net"], "bundle": p.bundle.version,
                  "trained_on": "synthetic phantoms"},
        "request": "JSON, 28x28 PNG as base64 (~0.7 kB)",
        "concurrency": a.concurrency,
        "results": results,
        "limit_images_per_s": limit,
        "ratios": {"served_vs_bare": round(srv / results["bare"]["best"], 3),
                   "vs_limit": round(srv / limit, 3),
                   "bare_batch_gain": round(results["bare"]["best"]
                                            / results["bare"]["by_batch"]["1"], 2)},
        "machine": machine(),
        "quick": a.quick,
        "duration_s": round(time.time() - t_start, 1),
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
