"""Trainer: exact resume, early stopping, accumulation, metrics log, DDP equivalence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from common.train import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[2]


def make_data(n: int = 96, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return TensorDataset(x, y)


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 2)
    )


def step(model, batch):
    x, y = batch
    return torch.nn.functional.cross_entropy(model(x), y)


def weights(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.state_dict().values()])


def test_resume_after_interruption_gives_identical_weights(tmp_path):
    data, val = make_data(), make_data(32, seed=1)
    cfg = dict(epochs=4, batch_size=8, lr=0.05, warmup_steps=3, seed=3, checkpoint_every_steps=5)

    full = make_model()
    Trainer(full, TrainConfig(**cfg, out_dir=str(tmp_path / "a")), step_fn=step).fit(data, val)

    class Interrupt(Exception):
        pass

    calls = {"n": 0}

    def interrupting_step(model, batch):
        calls["n"] += 1
        if calls["n"] == 23:  # mid-epoch 2, between checkpoints
            raise Interrupt
        return step(model, batch)

    run_dir = str(tmp_path / "b")
    with pytest.raises(Interrupt):
        Trainer(make_model(), TrainConfig(**cfg, out_dir=run_dir), step_fn=interrupting_step).fit(
            data, val
        )
    # a fresh process would start with other RNG state: scramble it to prove it is restored
    torch.manual_seed(12345)
    resumed = make_model(seed=99)
    Trainer(resumed, TrainConfig(**cfg, out_dir=run_dir), step_fn=step).fit(data, val)
    assert torch.equal(weights(full), weights(resumed))
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]


def test_early_stopping_restores_best_and_stops():
    data, val = make_data(), make_data(32, seed=1)
    seen = []

    def eval_fn(model, loader):
        # a metric that peaks at epoch 2 then worsens: training must stop after `patience`
        seen.append(len(seen) + 1)
        return {"val_score": [0.5, 0.9, 0.8, 0.7, 0.6, 0.5][len(seen) - 1]}

    model = make_model()
    cfg = TrainConfig(epochs=6, batch_size=16, monitor="val_score", mode="max", patience=2)
    res = Trainer(model, cfg, step_fn=step, eval_fn=eval_fn).fit(data, val)
    assert res.stopped_early and res.epochs_run == 4
    assert res.best_epoch == 2 and res.best_metric == 0.9


def test_gradient_accumulation_matches_large_batch():
    data = make_data(64)
    a, b = make_model(), make_model()
    base = dict(epochs=2, lr=0.05, seed=1, optimizer="sgd", momentum=0.0)
    # no dropout influence: compare in a dropout-free model
    a[2].p = b[2].p = 0.0
    Trainer(a, TrainConfig(**base, batch_size=16), step_fn=step).fit(data)
    Trainer(b, TrainConfig(**base, batch_size=8, grad_accum_steps=2), step_fn=step).fit(data)
    assert torch.allclose(weights(a), weights(b), atol=1e-5)


def test_training_reduces_loss():
    data = make_data(256)
    model = make_model()
    res = Trainer(model, TrainConfig(epochs=5, batch_size=32, lr=0.02), step_fn=step).fit(
        data, make_data(64, seed=2)
    )
    assert res.history[-1]["val_loss"] < res.history[0]["val_loss"]


DDP_SCRIPT = """
import sys, torch, torch.distributed as dist
sys.path.insert(0, {root!r})
from tests.common.test_train import make_data, make_model, step
from common.train import Trainer, TrainConfig
model = make_model()
model[2].p = 0.0
Trainer(model, TrainConfig(epochs=2, batch_size={bs}, lr=0.05, optimizer="sgd", momentum=0.0,
        seed=5), step_fn=step).fit(make_data(64))
if not dist.is_initialized() or dist.get_rank() == 0:
    torch.save(model.state_dict(), {out!r})
"""


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process_same_global_batch(tmp_path):
    """2 gloo processes at batch 8 each == 1 process at batch 16 (atol 1e-5: float sum order)."""
    outs = {}
    for procs, bs in ((1, 16), (2, 8)):
        out = tmp_path / f"w{procs}.pt"
        script = tmp_path / f"ddp{procs}.py"
        script.write_text(DDP_SCRIPT.format(root=str(ROOT), bs=bs, out=str(out)))
        if procs == 1:
            cmd = [sys.executable, str(script)]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={procs}", str(script)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run(cmd, env=env, timeout=300, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        outs[procs] = torch.load(out, weights_only=True)
    for k in outs[1]:
        assert torch.allclose(outs[1][k], outs[2][k], atol=1e-5), k


def test_checkpoint_averaging_is_the_mean_of_the_last_epochs_and_only_kept_if_better():
    data, val = make_data(), make_data(32, seed=1)
    cfg = dict(epochs=4, batch_size=8, lr=0.05, seed=3, restore_best=False)
    ends: list[dict[str, torch.Tensor]] = []

    class Recording(Trainer):
        def _keep_snapshot(self):
            ends.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})
            super()._keep_snapshot()

    model = make_model()
    tr = Recording(model, TrainConfig(**cfg, average_last=3), step_fn=step)
    res = tr.fit(data, None)  # no val data: the average is taken as asked
    assert res.averaged_epochs == 3
    for k, v in model.state_dict().items():
        assert torch.allclose(v, torch.stack([e[k] for e in ends[-3:]]).mean(0), atol=1e-6)

    model = make_model()
    tr = Trainer(model, TrainConfig(**cfg, average_last=3), step_fn=step)
    res = tr.fit(data, val)
    avg = tr.history[-1]
    assert avg["averaged_epochs"] == 3
    best_single = min(h["val_loss"] for h in tr.history[:-1])
    # kept exactly when the averaged weights beat the best single epoch on val_loss
    assert (res.averaged_epochs == 3) == (avg["val_loss"] < best_single)
    assert res.best_metric == pytest.approx(min(best_single, avg["val_loss"]))


def test_negative_average_last_is_refused_with_the_field():
    from common.errors import InvalidInput

    with pytest.raises(InvalidInput) as e:
        Trainer(make_model(), TrainConfig(average_last=-1), step_fn=step)
    assert e.value.field == "average_last"
