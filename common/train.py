"""The Trainer: the one training loop every neural model in the suite goes through.

    trainer = Trainer(model, TrainConfig(epochs=5, lr=1e-3, monitor="val_auc", mode="max",
                      patience=2, out_dir="runs/x"), step_fn=loss_of_batch, eval_fn=evaluate)
    result = trainer.fit(train_dataset, val_dataset)

- `step_fn(model, batch) -> loss` (a scalar tensor, or a dict with "loss" and other scalars);
- `eval_fn(model, loader) -> {"metric": value}` (model in eval mode, under no_grad/autocast);
  without it the mean step loss on the validation set is reported as `val_loss`.

Device/precision from common.device; warmup + cosine LR; gradient accumulation (DDP `no_sync` on
non-final micro-steps); clipping; early stopping on `monitor`; checkpoint averaging of the last
`average_last` epochs (kept only when it beats the best single epoch on `monitor`); a checkpoint
per epoch (and every
`checkpoint_every_steps`) with exact resume of model, optimizer, scheduler, scaler, RNG states,
epoch, step and position in the epoch's sample order; metrics.jsonl; tqdm (quiet under CI).
Under torchrun the model is wrapped in DDP, data is sharded by DistributedSampler and only rank
0 writes. Single-process shuffling uses the same permutation as DistributedSampler, so N
processes at batch b take the same samples per optimizer step as 1 process at batch N*b.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from tqdm.auto import tqdm

from common.device import autocast, pick_device, resolve_precision, seed_everything
from common.distributed import init_distributed, is_distributed, is_main, rank
from common.errors import InvalidInput

__all__ = ["TrainConfig", "Trainer", "TrainResult", "claim_work_dir", "observe_epochs"]
log = logging.getLogger(__name__)

StepFn = Callable[[torch.nn.Module, Any], "torch.Tensor | dict[str, torch.Tensor]"]
EvalFn = Callable[[torch.nn.Module, DataLoader], dict[str, float]]
EpochObserver = Callable[["Trainer", dict[str, float]], None]
# Process-wide, because verticals build their Trainers deep inside `train`/`evaluate`: a command
# (common.tracking) watches every epoch of whatever Trainers it runs without threading a callback
# through each vertical.
_epoch_observers: list[EpochObserver] = []


def observe_epochs(observer: EpochObserver) -> Callable[[], None]:
    """Call `observer(trainer, record)` after every epoch of every Trainer in this process (rank 0
    only; `record` is the metrics.jsonl line) until the returned function is called."""
    _epoch_observers.append(observer)
    return lambda: _epoch_observers.remove(observer)


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64  # per process, per micro-step
    eval_batch_size: int | None = None
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    momentum: float = 0.9
    warmup_steps: int = 0
    warmup_ratio: float = 0.0  # used when warmup_steps == 0
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = 0.0
    grad_accum_steps: int = 1
    clip_grad_norm: float | None = None
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    device: str | None = None
    seed: int = 0
    monitor: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    patience: int | None = None  # None: no early stopping
    restore_best: bool = True
    # average the weights of the last N epoch ends (the checkpoint averaging of NMT recipes); the
    # average replaces the best epoch only when it scores better on `monitor` (needs val data)
    average_last: int = 0
    out_dir: str | None = None  # checkpoints + metrics.jsonl; None keeps nothing on disk
    resume: bool = True
    checkpoint_every_steps: int | None = None
    max_steps_per_epoch: int | None = None
    num_workers: int = 0
    drop_last: bool = False
    shuffle: bool = True
    progress: bool | None = None  # None: on when stderr is a TTY and not under CI


@dataclass
class TrainResult:
    best_metric: float | None
    best_epoch: int | None
    epochs_run: int
    global_step: int
    stopped_early: bool
    history: list[dict[str, float]] = field(default_factory=list)
    averaged_epochs: int = 0  # > 0 when the returned weights are an average of that many epochs


class _PermutationSampler(Sampler[int]):
    """Single-process shuffle with DistributedSampler's exact permutation (seed + epoch)."""

    def __init__(self, n: int, seed: int, shuffle: bool):
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class _SkipSampler(Sampler[int]):
    """Skips the first `skip` indices of an epoch: the sampler position for mid-epoch resume."""

    def __init__(self, base: Sampler[int], skip: int = 0):
        self.base, self.skip = base, skip

    def __iter__(self) -> Iterator[int]:
        it = iter(self.base)
        for _ in range(self.skip):
            next(it, None)
        return it

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _progress_enabled(flag: bool | None) -> bool:
    if flag is not None:
        return flag
    return sys.stderr.isatty() and not os.environ.get("CI")


class Trainer:
    """See the module docstring."""

    def __init__(
        self,
        model: torch.nn.Module,
        config: TrainConfig | None = None,
        step_fn: StepFn | None = None,
        eval_fn: EvalFn | None = None,
        collate_fn: Callable | None = None,
        param_groups: list[dict[str, Any]] | None = None,
    ):
        self.config = config or TrainConfig()
        if self.config.grad_accum_steps < 1:
            raise ValueError("grad_accum_steps must be >= 1")
        if self.config.mode not in ("min", "max"):
            raise ValueError("mode must be 'min' or 'max'")
        if self.config.average_last < 0:
            raise InvalidInput("average_last", f"{self.config.average_last}: must be >= 0")
        self.step_fn = step_fn or (lambda m, b: m(b))
        self.eval_fn = eval_fn
        self.collate_fn = collate_fn
        init_distributed()
        self.device = pick_device(self.config.device)
        self.precision = resolve_precision(self.device, self.config.precision)
        seed_everything(self.config.seed)
        self.model = model.to(self.device)
        self.ddp = None
        if is_distributed():
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = self._make_optimizer(param_groups)
        self.scaler = torch.amp.GradScaler(enabled=self.precision == "fp16")
        self.scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
        self.out_dir = Path(self.config.out_dir) if self.config.out_dir else None
        self.epoch = 0
        self.global_step = 0
        self.samples_done_in_epoch = 0  # per-process samples consumed in the current epoch
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.bad_epochs = 0
        self.history: list[dict[str, float]] = []
        self._best_state: dict[str, torch.Tensor] | None = None
        self._snapshots: list[dict[str, torch.Tensor]] = []  # last epoch ends, for averaging

    # ---- setup ----------------------------------------------------------------------------
    def _make_optimizer(self, groups) -> torch.optim.Optimizer:
        c = self.config
        params = groups or [p for p in self.model.parameters() if p.requires_grad]
        if c.optimizer == "sgd":
            return torch.optim.SGD(
                params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay
            )
        cls = torch.optim.AdamW if c.optimizer == "adamw" else torch.optim.Adam
        return cls(params, lr=c.lr, weight_decay=c.weight_decay)

    def _make_scheduler(self, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
        c = self.config
        warmup = c.warmup_steps or int(c.warmup_ratio * total_steps)

        def factor(step: int) -> float:
            if warmup and step < warmup:
                return (step + 1) / warmup
            if c.schedule == "constant":
                return 1.0
            progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
            if c.schedule == "linear":
                shape = 1.0 - progress
            else:
                shape = 0.5 * (1.0 + math.cos(math.pi * progress))
            return c.min_lr_ratio + (1.0 - c.min_lr_ratio) * shape

        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)

    def _sampler(self, dataset: Dataset) -> Sampler[int]:
        c = self.config
        if is_distributed():
            return DistributedSampler(
                dataset, shuffle=c.shuffle, seed=c.seed, drop_last=c.drop_last
            )
        return _PermutationSampler(len(dataset), c.seed, c.shuffle)

    def _loader(self, dataset: Dataset, sampler: Sampler[int], batch_size: int, epoch: int):
        g = torch.Generator()
        g.manual_seed(self.config.seed + epoch)  # deterministic worker seeds per epoch
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=self.collate_fn,
            num_workers=self.config.num_workers,
            drop_last=self.config.drop_last,
            generator=g,
            pin_memory=self.device.type == "cuda",
        )

    def _steps_per_epoch(self, n_batches: int) -> int:
        if self.config.max_steps_per_epoch:
            n_batches = min(
                n_batches, self.config.max_steps_per_epoch * self.config.grad_accum_steps
            )
        return math.ceil(n_batches / self.config.grad_accum_steps)

    # ---- checkpoints ----------------------------------------------------------------------
    def _ckpt_path(self) -> Path | None:
        return self.out_dir / "checkpoint.pt" if self.out_dir else None

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "scaler": self.scaler.state_dict(),
            "rng": _rng_state(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "samples_done_in_epoch": self.samples_done_in_epoch,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "history": json.dumps(self.history),
            "best_state": self._best_state,
            "snapshots": self._snapshots,
            "config": json.dumps(asdict(self.config)),
        }

    def save_checkpoint(self) -> None:
        path = self._ckpt_path()
        if path is None or not is_main():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)  # atomic: a kill mid-write leaves the previous checkpoint intact

    def load_checkpoint(self, path: Path) -> None:
        # weights_only=True: tensors and plain containers only, no arbitrary unpickling
        state = torch.load(path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state["scheduler"] and self.scheduler:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        self.epoch = state["epoch"]
        self.global_step = state["global_step"]
        self.samples_done_in_epoch = state["samples_done_in_epoch"]
        self.best_metric = state["best_metric"]
        self.best_epoch = state["best_epoch"]
        self.bad_epochs = state["bad_epochs"]
        self.history = json.loads(state["history"])
        self._best_state = state["best_state"]
        self._snapshots = state.get("snapshots") or []
        log.info("resumed from %s at epoch %d step %d", path, self.epoch, self.global_step)

    # ---- evaluation -----------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, dataset: Dataset) -> dict[str, float]:
        """Run eval_fn (or mean step loss) on rank 0 over the whole dataset."""
        bs = self.config.eval_batch_size or self.config.batch_size
        loader = DataLoader(
            dataset,
            batch_size=bs,
            shuffle=False,
            collate_fn=self.collate_fn,
            num_workers=self.config.num_workers,
        )
        self.model.eval()
        try:
            with autocast(self.device, self.precision):
                if self.eval_fn is not None:
                    return {k: float(v) for k, v in self.eval_fn(self.model, loader).items()}
                total, n = 0.0, 0
                for batch in loader:
                    out = self.step_fn(self.model, self._to_device(batch))
                    loss = out["loss"] if isinstance(out, dict) else out
                    total += float(loss) * _batch_len(batch)
                    n += _batch_len(batch)
                return {"val_loss": total / max(n, 1)}
        finally:
            self.model.train()

    def _to_device(self, batch: Any) -> Any:
        if isinstance(batch, torch.Tensor):
            return batch.to(self.device, non_blocking=True)
        if isinstance(batch, dict):
            return {k: self._to_device(v) for k, v in batch.items()}
        if isinstance(batch, list | tuple):
            return type(batch)(self._to_device(v) for v in batch)
        return batch

    def _improved(self, value: float) -> bool:
        if self.best_metric is None:
            return True
        return value < self.best_metric if self.config.mode == "min" else value > self.best_metric

    # ---- the loop -------------------------------------------------------------------------
    def fit(self, train_data: Dataset, val_data: Dataset | None = None) -> TrainResult:
        c = self.config
        sampler = self._sampler(train_data)
        n_batches = math.ceil(len(sampler) / c.batch_size)
        if c.drop_last:
            n_batches = len(sampler) // c.batch_size
        steps_per_epoch = self._steps_per_epoch(n_batches)
        self.scheduler = self._make_scheduler(steps_per_epoch * c.epochs)
        ckpt = self._ckpt_path()
        if c.resume and ckpt is not None and ckpt.exists():
            self.load_checkpoint(ckpt)
        stopped_early = self.bad_epochs >= (c.patience or 10**9)
        metrics_file = self.out_dir / "metrics.jsonl" if self.out_dir and is_main() else None
        model = self.ddp or self.model
        model.train()
        while self.epoch < c.epochs and not stopped_early:
            t0 = time.time()
            sampler.set_epoch(self.epoch)  # type: ignore[attr-defined]
            skip = self.samples_done_in_epoch
            loader = self._loader(train_data, _SkipSampler(sampler, skip), c.batch_size, self.epoch)
            micro_total = min(n_batches, steps_per_epoch * c.grad_accum_steps)
            micro_done = math.ceil(skip / c.batch_size)
            bar = tqdm(
                total=micro_total,
                initial=micro_done,
                desc=f"epoch {self.epoch + 1}/{c.epochs}",
                disable=not (_progress_enabled(c.progress) and is_main()),
                leave=False,
            )
            loss_sum, loss_n = 0.0, 0
            self.optimizer.zero_grad(set_to_none=True)
            for i, batch in enumerate(loader, start=micro_done):
                if i >= micro_total:
                    break
                final_micro = (i + 1) % c.grad_accum_steps == 0 or i + 1 == micro_total
                sync = (
                    contextlib.nullcontext()
                    if (final_micro or self.ddp is None)
                    else self.ddp.no_sync()
                )
                with sync:
                    with autocast(self.device, self.precision):
                        out = self.step_fn(model, self._to_device(batch))
                    loss = out["loss"] if isinstance(out, dict) else out
                    self.scaler.scale(loss / c.grad_accum_steps).backward()
                loss_sum += float(loss.detach())
                loss_n += 1
                self.samples_done_in_epoch += _batch_len(batch)
                if final_micro:
                    if c.clip_grad_norm:
                        self.scaler.unscale_(self.optimizer)
                        torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.clip_grad_norm)
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                    self.optimizer.zero_grad(set_to_none=True)
                    self.scheduler.step()
                    self.global_step += 1
                    if (
                        c.checkpoint_every_steps
                        and self.global_step % c.checkpoint_every_steps == 0
                    ):
                        self.save_checkpoint()
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / loss_n:.4f}")
            bar.close()
            record: dict[str, float] = {
                "epoch": self.epoch + 1,
                "step": self.global_step,
                "train_loss": loss_sum / max(loss_n, 1),
                "lr": self.optimizer.param_groups[0]["lr"],
            }
            if val_data is not None:
                record.update(self._evaluate_everywhere(val_data))
            record["epoch_time_s"] = round(time.time() - t0, 3)
            self.epoch += 1
            self.samples_done_in_epoch = 0
            self._track_best(record)
            self._keep_snapshot()
            self.history.append(record)
            if metrics_file is not None:
                metrics_file.parent.mkdir(parents=True, exist_ok=True)
                with open(metrics_file, "a") as f:
                    f.write(json.dumps(record) + "\n")
            if is_main():
                for observer in list(_epoch_observers):
                    observer(self, record)
            if c.patience is not None and self.bad_epochs >= c.patience:
                stopped_early = True
            self.save_checkpoint()
            log.info("epoch %s", record)
        if c.restore_best and self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        averaged = self._try_average(val_data)
        return TrainResult(
            self.best_metric,
            self.best_epoch,
            self.epoch,
            self.global_step,
            stopped_early,
            self.history,
            averaged,
        )

    def _keep_snapshot(self) -> None:
        if self.config.average_last < 2:
            return
        self._snapshots.append({k: v.detach().cpu().clone()
                                for k, v in self.model.state_dict().items()})
        del self._snapshots[: -self.config.average_last]

    def _try_average(self, val_data: Dataset | None) -> int:
        """Load the mean of the kept epoch-end weights if it beats the current weights on the
        monitor (or unconditionally without val data); returns the number of epochs averaged."""
        snaps = self._snapshots
        if len(snaps) < 2:
            return 0
        mean = {k: (torch.stack([s[k].float() for s in snaps]).mean(0).to(v.dtype)
                    if v.is_floating_point() else snaps[-1][k])
                for k, v in snaps[-1].items()}
        if val_data is None:
            self.model.load_state_dict(mean)
            return len(snaps)
        current = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(mean)
        record = self._evaluate_everywhere(val_data)
        value = record.get(self.config.monitor)
        # "epoch": the weights are those of the run's end (averaged), for readers of history
        self.history.append({"epoch": self.epoch, "averaged_epochs": len(snaps), **record})
        log.info("average of the last %d epochs: %s", len(snaps), record)
        if value is not None and self._improved(value):
            self.best_metric = value
            return len(snaps)
        self.model.load_state_dict(current)
        return 0

    def _evaluate_everywhere(self, val_data: Dataset) -> dict[str, float]:
        """Rank 0 evaluates; every rank receives the same numbers, so all stop together."""
        metrics = [self.evaluate(val_data) if is_main() else None]
        if is_distributed():
            dist.broadcast_object_list(metrics, src=0)
        return metrics[0]  # type: ignore[return-value]

    def _track_best(self, record: dict[str, float]) -> None:
        value = record.get(self.config.monitor)
        if value is None:
            if self.config.patience is not None and "val" in self.config.monitor:
                raise KeyError(f"monitor {self.config.monitor!r} not in metrics {sorted(record)}")
            return
        if self._improved(value):
            self.best_metric, self.best_epoch, self.bad_epochs = value, int(record["epoch"]), 0
            if self.config.restore_best:
                self._best_state = copy.deepcopy(
                    {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
                )
        else:
            self.bad_epochs += 1


def claim_work_dir(out_dir: str | Path | None, job: dict[str, Any]) -> None:
    """Tie a resumable work dir to one job (config + data fingerprint): the first run writes
    `job.json`; a rerun with a different job is refused instead of resuming a checkpoint of
    another model or dataset."""
    if out_dir is None:
        return
    path = Path(out_dir) / "job.json"
    text = json.dumps(job, sort_keys=True, default=str)
    if path.exists() and path.read_text() != text:
        raise InvalidInput("work_dir", f"{out_dir} holds a run of another configuration or "
                                       "dataset; use a new --work-dir or delete it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _batch_len(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return len(batch)
    if isinstance(batch, dict):
        return _batch_len(next(iter(batch.values())))
    if isinstance(batch, list | tuple):
        return _batch_len(batch[0])
    return 1


def rank_zero_only(fn: Callable) -> Callable:
    """Decorator: run `fn` on rank 0 only (writes, logs)."""

    def wrapper(*a, **kw):
        return fn(*a, **kw) if rank() == 0 else None

    return wrapper
