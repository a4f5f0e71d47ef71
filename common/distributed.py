"""torchrun / DDP helpers. Launch N processes on one machine with

    torchrun --standalone --nproc_per_node=2 -m common.cli train fraud ...

(NCCL on GPU, gloo on CPU); on N nodes add --nnodes/--node_rank/--rdzv_endpoint as usual.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["init_distributed", "is_distributed", "rank", "world_size", "is_main", "barrier"]


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def init_distributed() -> bool:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); no-op otherwise."""
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend)
    return True


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()
