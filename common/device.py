"""Device and precision policy, and seeding.

CUDA with bf16 autocast where the GPU supports it, MPS where present, else fp32 on CPU. All
model code goes through `autocast(device, precision)` so a vertical never branches on device.
"""

from __future__ import annotations

import contextlib
import os
import random
from typing import Literal

import numpy as np
import torch

__all__ = ["pick_device", "resolve_precision", "autocast", "seed_everything", "Precision"]

Precision = Literal["auto", "fp32", "bf16", "fp16"]


def pick_device(prefer: str | None = None) -> torch.device:
    """`prefer` ('cpu', 'cuda', 'cuda:1', 'mps') wins; else env VERTICALS_DEVICE; else the best."""
    name = prefer or os.environ.get("VERTICALS_DEVICE")
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        return torch.device(f"cuda:{local_rank}")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_precision(device: torch.device, precision: Precision = "auto") -> str:
    """'auto' → bf16 on CUDA that supports it, else fp32 (CPU autocast buys nothing on 2 cores)."""
    if precision != "auto":
        return precision
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def autocast(device: torch.device, precision: str):
    """Context manager for the forward pass under the chosen precision."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
