"""Training benchmark: `common.train.Trainer` vs a hand-written PyTorch loop on the same model,
data, optimizer (AdamW), LR schedule (cosine) and batch size. Reports samples/s of each and
their ratio (target ≥ 0.95). Runs alternate (hand, trainer, trainer, hand, ...) after one
discarded warm-up run of each, so that drift in machine load falls on both alike.

Two models: an MLP on tabular data (tiny steps: the loop's own per-step overhead shows) and a
small CNN on 1x28x28 images (compute-bound steps).

    python bench/training.py --quick --out /tmp/training.json
    python bench/training.py --out bench/results/training.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._proc import machine  # noqa: E402
from common.train import TrainConfig, Trainer  # noqa: E402

LR, SEED = 1e-3, 0


def make_task(name: str, n: int) -> tuple[Callable[[], torch.nn.Module], TensorDataset]:
    g = torch.Generator().manual_seed(SEED)
    if name == "mlp":
        x = torch.randn(n, 64, generator=g)
        y = (x[:, :8].sum(1) > 0).long()

        def build() -> torch.nn.Module:
            torch.manual_seed(SEED)
            return torch.nn.Sequential(
                torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                torch.nn.ReLU(), torch.nn.Linear(256, 2))
    else:
        x = torch.randn(n, 1, 28, 28, generator=g)
        y = (x.mean((1, 2, 3)) > 0).long()

        def build() -> torch.nn.Module:
            torch.manual_seed(SEED)
            return torch.nn.Sequential(
                torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                torch.nn.Flatten(), torch.nn.Linear(32 * 7 * 7, 10))
    return build, TensorDataset(x, y)


def step(model: torch.nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return torch.nn.functional.cross_entropy(model(x), y)


def hand_loop(model: torch.nn.Module, data: TensorDataset, epochs: int, bs: int) -> None:
    """What one would write by hand: DataLoader, AdamW, cosine LambdaLR, backward, step."""
    torch.manual_seed(SEED)
    loader = DataLoader(data, batch_size=bs, shuffle=True)
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    total = epochs * math.ceil(len(data) / bs)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()


def trainer_loop(model: torch.nn.Module, data: TensorDataset, epochs: int, bs: int) -> None:
    cfg = TrainConfig(epochs=epochs, batch_size=bs, lr=LR, optimizer="adamw", schedule="cosine",
                      seed=SEED, device="cpu", precision="fp32", progress=False, out_dir=None)
    Trainer(model, cfg, step_fn=step).fit(data)


def measure(task: str, n: int, epochs: int, bs: int, repeats: int) -> dict:
    build, data = make_task(task, n)
    runners = {"hand": hand_loop, "trainer": trainer_loop}
    for fn in runners.values():  # warm-up, discarded
        fn(build(), data, 1, bs)
    runs: dict[str, list[float]] = {"hand": [], "trainer": []}
    for i in range(repeats):
        order = ["hand", "trainer"] if i % 2 == 0 else ["trainer", "hand"]
        for name in order:
            model = build()
            t0 = time.perf_counter()
            runners[name](model, data, epochs, bs)
            runs[name].append(round(n * epochs / (time.perf_counter() - t0), 1))
        print(f"[{task}] round {i + 1}: hand {runs['hand'][-1]}, trainer "
              f"{runs['trainer'][-1]} samples/s", file=sys.stderr)
    hand, ours = statistics.median(runs["hand"]), statistics.median(runs["trainer"])
    return {
        "hand": {"samples_per_s": hand, "runs": runs["hand"]},
        "trainer": {"samples_per_s": ours, "runs": runs["trainer"]},
        "ratio": round(ours / hand, 3),
        # paired within a round: robust to load that drifts between rounds
        "ratio_per_round": [round(t / h, 3) for t, h in zip(runs["trainer"], runs["hand"],
                                                              strict=True)],
        "samples": n, "epochs": epochs, "batch_size": bs,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small data, 3 rounds (< 1 min)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/training.json"))
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--repeats", type=int, default=None)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    repeats = a.repeats or (3 if a.quick else 5)
    plan = {"mlp": (20_000, 1, 128), "cnn": (4_000, 1, 64)} if a.quick else \
        {"mlp": (100_000, 2, 128), "cnn": (20_000, 1, 64)}
    t0 = time.time()
    results = {task: measure(task, n, ep, bs, repeats) for task, (n, ep, bs) in plan.items()}
    out = {
        "results": results,
        "ratio": min(r["ratio"] for r in results.values()),
        "target": 0.95,
        "models": {"mlp": "MLP 64-256-256-2 on 64 synthetic features",
                   "cnn": "2-conv CNN on synthetic 1x28x28 images"},
        "settings": {"optimizer": "AdamW", "lr": LR, "schedule": "cosine", "precision": "fp32",
                     "data": "in-memory TensorDataset, shuffled, DataLoader num_workers=0",
                     "repeats": repeats, "statistic": "median samples/s", "quick": a.quick},
        "machine": machine(),
        "duration_s": round(time.time() - t0, 1),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2) + "\n")
    for task, r in results.items():
        print(f"{task}: hand {r['hand']['samples_per_s']:.0f}  trainer "
              f"{r['trainer']['samples_per_s']:.0f} samples/s  ratio {r['ratio']}")


if __name__ == "__main__":
    main()
