"""Single-transaction fraud scoring latency: in-process and over HTTP at a fixed request rate.

    .venv/bin/python bench/fraud_latency.py --quick            # < 1 min
    .venv/bin/python bench/fraud_latency.py --rate 200 --seconds 30 --out bench/results/x.json

1. Trains the `test`-preset bundle into a temp store (or uses --bundle-root).
2. In-process: `FraudPredictor.predict([tx])` one transaction at a time (features from the
   in-memory store + XGBoost + TreeSHAP reasons), p50/p99.
3. HTTP: `verticals serve` on loopback in its own process; a separate client process sends
   POST /fraud/v1/score open-loop at a fixed rate (latency measured from each request's
   scheduled send time, so a stalled server cannot hide queueing) with a minimal asyncio
   HTTP/1.1 client over keep-alive connections (httpx costs ms of CPU per request here).
   The same client at the same rate against GET /livez gives the HTTP floor of this machine.
Goals: p99 <= 5 ms in-process, <= 20 ms over HTTP at 200 req/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def transactions(n: int, seed: int = 1) -> list[dict]:
    """Plausible authorisations after the test bundle's training data (ends 2018-09-30)."""
    rng = np.random.default_rng(seed)
    t0 = np.datetime64("2018-10-01T00:00:00")
    secs = np.sort(rng.integers(0, 86_400 * 3, n))
    return [
        {"transaction_id": 80_000_000 + i, "timestamp": str(t0 + np.timedelta64(int(s), "s")),
         "customer_id": int(rng.integers(0, 300)), "terminal_id": int(rng.integers(0, 600)),
         "amount": round(float(rng.gamma(2.0, 30.0)), 2)}
        for i, s in enumerate(secs)
    ]


def pct(lat_s: list[float]) -> dict[str, float]:
    a = np.asarray(lat_s) * 1e3
    return {"n": len(a), "p50_ms": round(float(np.percentile(a, 50)), 3),
            "p90_ms": round(float(np.percentile(a, 90)), 3),
            "p99_ms": round(float(np.percentile(a, 99)), 3),
            "max_ms": round(float(a.max()), 3), "mean_ms": round(float(a.mean()), 3)}


def in_process(root: Path, n: int) -> dict:
    from fraud_detection.predictor import FraudPredictor

    p = FraudPredictor.load("latest", root=root)
    txs = transactions(n + 200, seed=2)
    for t in txs[:200]:  # warm-up
        p.predict([t])
    lat = []
    for t in txs[200:]:
        t0 = time.perf_counter()
        p.predict([t])
        lat.append(time.perf_counter() - t0)
    return pct(lat)


# ---- the load client (runs in its own process) ----------------------------------------------
async def _client(port: int, path: str, method: str, bodies: list[bytes], rate: float,
                  conns: int) -> dict:
    pool: asyncio.Queue = asyncio.Queue()
    for _ in range(conns):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    lat, errors = [], 0

    async def one(body: bytes, scheduled: float) -> None:
        nonlocal errors
        reader, writer = await pool.get()
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        writer.write(head.encode() + body)
        status = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        lat.append(time.perf_counter() - scheduled)
        errors += not status.startswith(b"HTTP/1.1 200")
        pool.put_nowait((reader, writer))

    start = time.perf_counter() + 0.05
    tasks = []
    for i, body in enumerate(bodies):
        when = start + i / rate
        delay = when - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(body, when)))
    await asyncio.gather(*tasks)
    took = time.perf_counter() - start
    return {**pct(lat), "errors": errors, "target_rps": rate,
            "achieved_rps": round(len(bodies) / took, 1)}


def client_main(a: argparse.Namespace) -> None:
    if a.path == "/livez":
        bodies, method = [b""] * a.n, "GET"
    else:
        bodies, method = [json.dumps(t).encode() for t in transactions(a.n, seed=3)], "POST"
    print(json.dumps(asyncio.run(_client(a.port, a.path, method, bodies, a.rate, a.conns))))


def run_client(port: int, path: str, n: int, rate: float, conns: int = 16) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--client", "--port", str(port), "--path", path, "--n",
         str(n), "--rate", str(rate), "--conns", str(conns)],
        check=True, capture_output=True, text=True, timeout=600,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def over_http(root: Path, rate: float, seconds: float) -> dict:
    port = free_port()
    env = {**os.environ, "CI": "true"}
    server = subprocess.Popen(
        [str(ROOT / ".venv/bin/verticals"), "serve", "--verticals", "fraud", "--root", str(root),
         "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("server did not become ready")
        n = int(rate * seconds)
        run_client(port, "/fraud/v1/score", min(200, n), rate)  # warm-up
        score = run_client(port, "/fraud/v1/score", n, rate)
        floor = run_client(port, "/livez", n, rate)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {"score": score, "livez_floor": floor}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run (< 1 minute)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/fraud_latency.json"))
    ap.add_argument("--rate", type=float, default=200.0, help="HTTP requests per second")
    ap.add_argument("--seconds", type=float, default=None, help="HTTP load duration")
    ap.add_argument("--bundle-root", default=None, help="store with a fraud bundle (else train)")
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--path", default="/fraud/v1/score", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--conns", type=int, default=16, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.client:
        return client_main(a)
    seconds = a.seconds or (8.0 if a.quick else 30.0)
    t0 = time.time()
    root = Path(a.bundle_root) if a.bundle_root else Path(tempfile.mkdtemp(prefix="fraud-bench-"))
    if not a.bundle_root:
        from common.registry import get_vertical

        get_vertical("fraud").train_default(root, preset="test")
    result = {
        "bench": "fraud_latency",
        "in_process": in_process(root, 1000 if a.quick else 5000),
        "http": over_http(root, a.rate, seconds),
        "goals": {"in_process_p99_ms": 5.0, "http_p99_ms": 20.0, "rate_rps": a.rate},
        "config": {"rate": a.rate, "seconds": seconds, "quick": a.quick, "client":
                   "asyncio HTTP/1.1, 16 keep-alive connections, separate process, open loop",
                   "server": "verticals serve (uvicorn, 1 worker)", "cpus": os.cpu_count()},
        "load_avg_at_end": os.getloadavg(),
    }
    h = result["http"]
    result["ratios"] = {"http_p99_over_floor_p99": round(
        h["score"]["p99_ms"] / max(h["livez_floor"]["p99_ms"], 1e-9), 2)}
    result["duration_s"] = round(time.time() - t0, 1)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
