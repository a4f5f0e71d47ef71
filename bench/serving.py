"""Serving benchmark: the same model behind (a) a plain FastAPI endpoint, (b) LitServe with its
batching on, (c) our server (`create_app` on a bench-local vertical), next to (d) a no-op
endpoint that only decodes the same body and (e) the bare model's best batched throughput.
The limit is the lower of (d) and (e); our throughput is reported as a fraction of it.

Every server is its own uvicorn process on 127.0.0.1 (same uvicorn settings), all up at once;
a separate load-generator process (bench/_loadgen.py) drives one at a time with the same body
and concurrency, and the rounds are interleaved across servers so that noise from other work
on the machine falls on all of them alike. Medians over rounds are reported.

    python bench/serving.py --quick --out /tmp/serving.json
    python bench/serving.py --out bench/results/serving.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _proc  # noqa: E402
from bench._bare import bare_throughput  # noqa: E402
from bench._models import BATCHING, MODELS, PATHS, request_body, write_bundle  # noqa: E402
from bench._servers import HEALTH  # noqa: E402

# torch threads in every server, per model: the MLP is too small to gain from a second thread
# (and would take the core the HTTP loop needs); ResNet-18 is compute-bound and needs both.
THREADS = {"mlp": 1, "resnet": 2}
# LitServe's (max_batch_size, batch_timeout s, fast_queue) tried in a full run; the best one
# by throughput is measured side by side with the others ("tuned fairly").
LITSERVE_GRID = {
    "mlp": [(16, 0.001, True), (32, 0.002, True), (64, 0.005, True), (32, 0.002, False)],
    "resnet": [(8, 0.005, True), (16, 0.01, True), (32, 0.02, True), (16, 0.01, False)],
}
LITSERVE_QUICK = {"mlp": (32, 0.002, True), "resnet": (16, 0.01, True)}
BODY_DESC = {
    "mlp": "JSON {\"x\": [32 floats]}",
    "resnet": "JSON {\"tensor_b64\": base64 of float32 3x64x64} (64 KiB)",
}


def litserve_cmd(model: str, port: int, cfg: tuple[int, float, bool]) -> list[str]:
    mb, bt, fq = cfg
    cmd = [_proc.PY, "-m", "bench._litserve", "--model", model, "--port", str(port),
           "--max-batch-size", str(mb), "--batch-timeout", str(bt)]
    return cmd + (["--fast-queue"] if fq else [])


def start(name: str, model: str, work: Path, litserve_cfg=None) -> _proc.Server:
    port = _proc.free_port()
    env = {"BENCH_MODEL": model, "BENCH_BUNDLE_ROOT": str(work),
           "BENCH_TORCH_THREADS": str(THREADS[model])}
    if name == "litserve":
        cmd = litserve_cmd(model, port, litserve_cfg)
    else:
        cmd = _proc.uvicorn_cmd(f"{name}_app", port)
    return _proc.Server(name, cmd, port, HEALTH[name], env, work)


def tune_litserve(model: str, work: Path, body: Path, a: argparse.Namespace) -> tuple:
    """Short runs over LITSERVE_GRID; returns the fastest config and all results."""
    tried = {}
    for cfg in LITSERVE_GRID[model]:
        s = start("litserve", model, work, cfg)
        try:
            s.wait_ready()
            r = _proc.load(s.port, PATHS[model], body, a.concurrency, a.warmup, a.duration)
        finally:
            s.stop()
        tried[str(cfg)] = r
        print(f"  litserve {cfg}: {r['rps']} req/s, p99 {r['p99_ms']} ms", file=sys.stderr)
    best = max(LITSERVE_GRID[model], key=lambda c: tried[str(c)]["rps"])
    return best, tried


def median_result(rounds: list[dict]) -> dict:
    return {
        "rps": round(statistics.median(r["rps"] for r in rounds), 1),
        "p50_ms": round(statistics.median(r["p50_ms"] for r in rounds), 2),
        "p99_ms": round(statistics.median(r["p99_ms"] for r in rounds), 2),
        "rounds": rounds,
    }


def bench_model(model: str, a: argparse.Namespace) -> dict:
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix=f"bench-{model}-") as tmp:
        work = Path(tmp)
        write_bundle(model, work)
        body = work / "body.json"
        body.write_bytes(request_body(model))
        print(f"[{model}] bare model ...", file=sys.stderr)
        batches = (1, 16, 64) if a.quick else (1, 2, 4, 8, 16, 32, 64)
        bare = bare_throughput(model, batches, 0.3 if a.quick else 2.0, (1, 2))
        tuning = None
        if a.quick:
            ls_cfg = LITSERVE_QUICK[model]
        else:
            print(f"[{model}] tuning LitServe ...", file=sys.stderr)
            ls_cfg, tuning = tune_litserve(model, work, body, a)
        names = ["noop", "fastapi", "litserve", "verticals"]
        servers = {n: start(n, model, work, ls_cfg) for n in names}
        try:
            for s in servers.values():
                s.wait_ready()
            rounds: dict[str, list[dict]] = {n: [] for n in names}
            for i in range(a.repeats):
                for n in names:  # interleaved: each round runs every server once
                    r = _proc.load(servers[n].port, PATHS[model], body, a.concurrency,
                                   a.warmup, a.duration)
                    rounds[n].append(r)
                    print(f"[{model}] round {i + 1} {n}: {r['rps']} req/s, p99 {r['p99_ms']} ms"
                          f"{' other: ' + str(r['other']) if r['other'] else ''}",
                          file=sys.stderr)
        finally:
            for s in servers.values():
                s.stop()
    res = {n: median_result(rounds[n]) for n in names}
    res["bare"] = bare
    limit = min(res["noop"]["rps"], bare["rps"])
    ours, ls, fa = res["verticals"], res["litserve"], res["fastapi"]
    return {
        "model": {"mlp": "MLP 32-256-256-2 (float32)",
                  "resnet": "torchvision ResNet-18, 2 classes, 3x64x64 input"}[model],
        "body": BODY_DESC[model],
        "concurrency": a.concurrency,
        "results": res,
        "ratios": {
            "vs_limit": round(ours["rps"] / limit, 3),
            "vs_fastapi": round(ours["rps"] / fa["rps"], 3),
            "vs_litserve": round(ours["rps"] / ls["rps"], 3),
            "p99_vs_litserve": round(ours["p99_ms"] / ls["p99_ms"], 3),
            "p99_vs_fastapi": round(ours["p99_ms"] / fa["p99_ms"], 3),
        },
        "limit": {"rps": limit, "set_by": "noop" if res["noop"]["rps"] <= bare["rps"] else "bare"},
        "regime": ("HTTP/parsing-bound: the no-op floor is below the bare model"
                   if res["noop"]["rps"] <= bare["rps"]
                   else "compute-bound: the bare model is below the no-op floor"),
        "settings": {
            "torch_threads": THREADS[model],
            "ours_batching": BATCHING[model],
            "litserve": {"max_batch_size": ls_cfg[0], "batch_timeout_s": ls_cfg[1],
                         "fast_queue": ls_cfg[2], "num_api_servers": 1,
                         "workers_per_device": 1},
            "litserve_tuning": tuning,
            "uvicorn": "1 worker, httptools, uvloop, no access log (all servers)",
            "fastapi": "async def endpoint, one forward per request (batch of 1)",
            "client": "bench/_loadgen.py: asyncio + uvloop, raw HTTP/1.1 keep-alive, closed loop",
            "warmup_s": a.warmup, "duration_s": a.duration, "repeats": a.repeats,
            "quick": a.quick,
        },
        "machine": _proc.machine(),
        "duration_s": round(time.time() - t0, 1),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one short round each (< 1 min)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/serving.json"))
    ap.add_argument("--model", choices=MODELS, action="append",
                    help="mlp and/or resnet (default: both)")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads in every server (default: 1 for mlp, 2 for resnet)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--warmup", type=float, default=None, help="seconds discarded per round")
    ap.add_argument("--duration", type=float, default=None, help="measured seconds per round")
    a = ap.parse_args(argv)
    a.repeats = a.repeats or (1 if a.quick else 3)
    if a.threads:
        THREADS.update(dict.fromkeys(THREADS, a.threads))
    a.warmup = a.warmup if a.warmup is not None else (1.0 if a.quick else 3.0)
    a.duration = a.duration if a.duration is not None else (2.0 if a.quick else 10.0)
    out = {m: bench_model(m, a) for m in (a.model or list(MODELS))}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2) + "\n")
    for m, r in out.items():
        row = "  ".join(f"{n} {v['rps']:.0f} (p99 {v['p99_ms']:.0f} ms)"
                        for n, v in r["results"].items())
        print(f"{m}: {row}\n  ratios {r['ratios']}  limit {r['limit']}")


if __name__ == "__main__":
    main()
