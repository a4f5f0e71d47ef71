"""The bare model's best batched throughput on pre-built tensors (no HTTP, no parsing)."""

from __future__ import annotations

import statistics
import time

import torch

from bench._models import build_model, example_input, forward


def bare_throughput(model: str, batch_sizes: tuple[int, ...], seconds: float,
                    threads: tuple[int, ...]) -> dict:
    """Samples/s of `forward` (the same call every server makes) per (threads, batch); the
    best one is the model's limit. Restores torch's thread count afterwards."""
    net = build_model(model)
    saved = torch.get_num_threads()
    by: dict[str, dict] = {}
    try:
        for n in threads:
            torch.set_num_threads(n)
            for b in batch_sizes:
                x = example_input(model, b)
                forward(net, x)  # warm-up: first call allocates
                times = []
                t_end = time.perf_counter() + seconds
                while time.perf_counter() < t_end or len(times) < 3:
                    t0 = time.perf_counter()
                    forward(net, x)
                    times.append(time.perf_counter() - t0)
                times.sort()
                by[f"threads={n},batch={b}"] = {
                    "rps": round(b / statistics.median(times), 1),
                    "p50_ms": round(statistics.median(times) * 1e3, 3),
                    "p99_ms": round(times[min(len(times) - 1, int(0.99 * len(times)))] * 1e3, 3),
                }
    finally:
        torch.set_num_threads(saved)
    best = max(by, key=lambda k: by[k]["rps"])
    return {**by[best], "best": best, "by_config": by}
