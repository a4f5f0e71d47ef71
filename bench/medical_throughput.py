"""Medical imaging throughput: images/s of the served model vs the bare model on tensors.

    .venv/bin/python bench/medical_throughput.py [--quick] \
        [--out bench/results/medical_throughput.json]

A bundle is trained on the synthetic phantoms (preset `test` with --quick, else `demo`; or use
--bundle PATH), then, in the same run:
- `bare`: the network alone on pre-built (N, 1, 28, 28) tensors, best batch size of 1..64,
  with the bundle's test-time flips as served (`model_logits`) — the compute limit;
- `predictor`: `MedicalPredictor.predict` in-process on base64 PNG payloads (decode + resize +
  model + calibration), batches of 32;
- `noop`: a FastAPI endpoint that only parses the same JSON body into the request model — the
  HTTP and parsing floor;
- `served`: `verticals serve` (dynamic batching) under the lean load generator
  (bench/_loadgen.py, a separate process, `--concurrency` keep-alive connections).
`ratios.vs_limit` = served / min(bare, noop). Regime: a 28-px ResNet-18 is cheap per image, so
batching pays and per-request parsing (base64 + PNG decode + MONAI resize) is a large share.

`volume_3d` repeats the same four measurements for a 3D model (the quick MedMNIST 3D preset's
network, a narrow MONAI 3D ResNet, trained briefly on SYNTHETIC 28^3 volumes) on a 28^3 NIfTI
volume sent as base64 JSON: volumes/s served vs the bare model on (N, 1, 28, 28, 28) tensors.
A 3D network costs ~30x a 2D one per input, so this regime is compute-bound: the goal is
served >= 0.8 of bare.
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
from medical_imaging.train import model_logits  # noqa: E402
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


def bare(p: MedicalPredictor, repeats: int, dims: int = 2) -> dict:
    out = {}
    sizes, total = ((1, 8, 32, 64), 256) if dims == 2 else ((1, 4, 16), 32)
    with torch.no_grad():
        for bs in sizes:
            x = torch.rand(bs, p.in_channels, *(p.image_size,) * dims)
            model_logits(p.net, x, p.tta)  # warm-up (oneDNN primitive creation)
            n = max(1, total // bs)
            out[bs] = images_per_s(
                lambda x=x, n=n: [model_logits(p.net, x, p.tta) for _ in range(n)], n * bs,
                repeats)
    return {"by_batch": {str(k): round(v, 1) for k, v in out.items()},
            "best": round(max(out.values()), 1)}


def volume_bundle(root: Path, quick: bool) -> Path:
    """A 3D bundle on SYNTHETIC volumes with the quick MedMNIST 3D preset's network."""
    from medical_imaging.evaluate import EVAL_PRESETS_3D
    from medical_imaging.pipeline import train_and_publish
    from medical_imaging.synthetic import make_volumes
    from medical_imaging.train import FitConfig

    n = (64, 32) if quick else (256, 64)
    splits = {}
    for name, k, seed in (("train", n[0], 0), ("val", n[1], 1)):
        v, y = make_volumes(k, 28, seed)
        splits[name] = (torch.from_numpy(v).float().div(255).unsqueeze(1), y)
    data = {**splits, "task": "binary", "num_classes": 2, "labels": ["no_lesion", "lesion"],
            "name": "synthetic-volumes", "synthetic": True, "fingerprint": "synthetic-volumes"}
    cfg = FitConfig(**{**EVAL_PRESETS_3D["quick"], "epochs": 1 if quick else 3}, device="cpu")
    return train_and_publish(data, root, cfg, name="medical-bench-3d").path


def nifti_b64(seed: int = 3) -> str:
    import gzip

    import nibabel as nib
    import numpy as np

    from medical_imaging.synthetic import make_volumes

    vol = make_volumes(1, 28, seed)[0][0]
    img = nib.Nifti1Image(np.ascontiguousarray(vol.transpose(2, 1, 0)), np.eye(4))
    return base64.b64encode(gzip.compress(img.to_bytes(), mtime=0)).decode()


def measure(p: MedicalPredictor, root: Path, payload: dict, tmp: Path, a, dims: int,
            timing: tuple[float, float, int]) -> dict:
    """bare, in-process predictor, no-op endpoint and served, all on the same payload."""
    duration, warmup, repeats = timing
    body = tmp / f"body{dims}d.json"
    body.write_text(json.dumps(payload))
    results = {"bare": bare(p, repeats, dims)}
    batch = 32 if dims == 2 else 8
    p.predict([payload] * batch)
    rate = images_per_s(lambda: p.predict([payload] * batch), batch, repeats)
    results["predictor"] = {"batch": batch, "images_per_s": round(rate, 1)}
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
    return {"results": results, "limit_images_per_s": limit,
            "ratios": {"served_vs_bare": round(srv / results["bare"]["best"], 3),
                       "vs_limit": round(srv / limit, 3),
                       "bare_batch_gain": round(results["bare"]["best"]
                                                / results["bare"]["by_batch"]["1"], 2)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small bundle, short windows (<1 min)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "medical_throughput.json"))
    ap.add_argument("--bundle", default=None, help="an existing 2D medical bundle directory")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--dims", default="2,3", help="which models: 2 (images), 3 (volumes)")
    a = ap.parse_args()
    wanted = {int(d) for d in a.dims.split(",")}
    t_start = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="bench-medical-"))
    duration, warmup, repeats = (4.0, 1.0, 3) if a.quick else (15.0, 3.0, 5)
    timing = (duration, warmup, repeats)
    report: dict = {"bench": "medical_throughput", "concurrency": a.concurrency}
    if 2 in wanted:
        root = tmp / "store"
        if a.bundle:
            bundle_path = Path(a.bundle)
            root = bundle_path.parent.parent
        else:
            preset = "test" if a.quick else "demo"
            bundle_path = get_vertical("medical").train_default(root, preset).path
        p = MedicalPredictor.load(bundle_path)
        payload = {"image_base64": base64.b64encode(example_png(True)).decode(),
                   "filename": "x.png"}
        report.update({
            "model": {"arch": p.bundle.model_config["net"], "bundle": p.bundle.version,
                      "trained_on": "synthetic phantoms"},
            "request": "JSON, 28x28 PNG as base64 (~0.7 kB)",
            **measure(p, root, payload, tmp, a, 2, timing)})
    if 3 in wanted:
        root3 = tmp / "store3d"  # its own store: `serve` loads the newest medical bundle
        p3 = MedicalPredictor.load(volume_bundle(root3, a.quick))
        payload3 = {"image_base64": nifti_b64(), "filename": "volume.nii.gz"}
        report["volume_3d"] = {
            "model": {"arch": p3.bundle.model_config["net"], "bundle": p3.bundle.version,
                      "trained_on": "synthetic volumes"},
            "request": f"JSON, 28^3 uint8 NIfTI (.nii.gz) as base64 "
                       f"(~{len(payload3['image_base64']) // 1024} kB)",
            **measure(p3, root3, payload3, tmp, a, 3, timing)}
    report.update({
        "machine": machine(),
        "quick": a.quick,
        "duration_s": round(time.time() - t_start, 1),
    })
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
