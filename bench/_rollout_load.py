"""Closed-loop load client for bench/rollout.py: bench/_loadgen.py's client, plus (a) a fresh
fraud transaction per request when asked (a repeated transaction_id is recorded once by the
fraud feature store, so one fixed body would not exercise the online path) and (b) a timeline:
the completion time, latency and answering model of every response, for the swap pause.

Runs as its own process (`python -m bench._rollout_load ...`). It prints `start <t>` (the
monotonic time the measured window opens; CLOCK_MONOTONIC is system-wide on Linux, so the
orchestrator's `time.monotonic()` is on the same clock) and then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Callable

from bench._loadgen import build_request, percentile

FRAUD_PATH = "/fraud/v1/score"
FRAUD_T0 = 1_538_352_000  # 2018-10-01T00:00:00Z: just after the test preset's training data


def fraud_body(i: int, seed: int = 0) -> bytes:
    """Transaction number `i` of a stream: unique id, timestamps increasing (4 per second),
    300 customers and 600 terminals as in the test preset. Any process rebuilds the same body."""
    r = random.Random(seed * 1_000_003 + i)
    return json.dumps({
        "transaction_id": 80_000_000 + i, "timestamp": FRAUD_T0 + i // 4,
        "customer_id": r.randrange(300), "terminal_id": r.randrange(600),
        "amount": round(r.gammavariate(2.0, 30.0), 2),
    }, separators=(",", ":")).encode()


async def _read(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One response → (status, body); bench/_loadgen.py's reader discards the body."""
    head = await reader.readuntil(b"\r\n\r\n")
    low = head.lower()
    i = low.find(b"content-length:")
    if i < 0:
        raise ValueError("response without Content-Length (chunked bodies are not supported)")
    return int(head[9:12]), await reader.readexactly(int(low[i + 15 : low.index(b"\r\n", i)]))


def answer_tag(body: bytes) -> str:
    """Which model answered: fraud answers carry `model_version`; the bench MLP's answer to
    the fixed body is its probability (told apart by bench/rollout.py)."""
    i = body.find(b'"model_version":"')
    if i >= 0:
        return body[i + 17 : body.index(b'"', i + 17)].decode()
    return repr(json.loads(body).get("probability"))


class Load:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        self.fixed = open(a.body_file, "rb").read() if a.body_file else None
        self.next = a.fraud_start
        self.lat: list[float] = []
        self.codes: Counter = Counter()
        self.timeline: list[tuple[float, float, str]] = []

    def request(self) -> bytes:
        if self.fixed is not None:
            body = self.fixed
        else:
            body = fraud_body(self.next, self.a.fraud_seed)
            self.next += 1
        return build_request(self.a.host, self.a.port, self.a.path, body)

    async def connection(self, t_measure: float, t_end: float) -> None:
        reader = writer = None
        keep: Callable[[bytes], str] | None = answer_tag if self.a.timeline else None
        while True:
            if writer is None:
                reader, writer = await asyncio.open_connection(self.a.host, self.a.port)
            t0 = time.monotonic()
            if t0 >= t_end:
                break
            try:
                writer.write(self.request())
                status, body = await _read(reader)
            except (ConnectionError, asyncio.IncompleteReadError, ValueError) as e:
                self.codes[f"error:{type(e).__name__}"] += 1
                writer.close()
                reader = writer = None
                await asyncio.sleep(0.01)
                continue
            t1 = time.monotonic()
            if t_measure <= t1 <= t_end:
                self.codes[status] += 1
                if status == 200:
                    self.lat.append(t1 - t0)
                    if keep is not None:
                        self.timeline.append((t1, t1 - t0, keep(body)))
        if writer is not None:
            writer.close()

    async def run(self) -> dict:
        a = self.a
        t_measure = time.monotonic() + a.warmup
        t_end = t_measure + a.duration
        print(f"start {t_measure:.6f}", flush=True)
        cpu0 = time.process_time()
        await asyncio.gather(*(self.connection(t_measure, t_end) for _ in range(a.concurrency)))
        window = min(time.monotonic(), t_end) - t_measure
        self.lat.sort()
        ok = self.codes.get(200, 0)
        out = {
            "rps": round(ok / window, 1) if window > 0 else 0.0,
            "p50_ms": round(percentile(self.lat, 0.50) * 1e3, 2),
            "p99_ms": round(percentile(self.lat, 0.99) * 1e3, 2),
            "ok": ok,
            "other": {str(k): v for k, v in self.codes.items() if k != 200},
            "window_s": round(window, 2),
            "client_cpu_us_per_req": round((time.process_time() - cpu0) / max(ok, 1) * 1e6, 1),
            "t_measure": t_measure,
            "next_index": self.next,
        }
        if a.timeline:
            self.timeline.sort()
            out["timeline"] = [[round(t, 6), round(lt, 6), tag] for t, lt, tag in self.timeline]
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--body-file", default=None, help="one fixed body (else fraud transactions)")
    ap.add_argument("--fraud-start", type=int, default=0, help="index of the first transaction")
    ap.add_argument("--fraud-seed", type=int, default=0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--timeline", action="store_true", help="every response's time and model")
    a = ap.parse_args()
    gc.disable()  # no collector pauses inside the measured window
    try:
        from uvloop import run as arun
    except ImportError:
        arun = asyncio.run
    json.dump(arun(Load(a).run()), sys.stdout)
    print()


if __name__ == "__main__":
    main()
