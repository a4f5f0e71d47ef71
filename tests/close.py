"""Equality of JSON-like answers up to float rounding: batched and single calls may take
different BLAS kernels (other last bits), which a value rounded to 6 decimals can expose."""

from __future__ import annotations

import math
from typing import Any


def same_answer(a: Any, b: Any, tol: float = 2e-6) -> bool:
    """True when `a` and `b` are equal, floats within `tol` (absolute or relative)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and math.isclose(
            a, b, rel_tol=tol, abs_tol=tol)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_answer(a[k], b[k], tol) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_answer(x, y, tol) for x, y in zip(a, b, strict=True))
    return a == b
