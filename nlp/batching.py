"""Length-grouped batches for the shared Trainer.

Short texts dominate SST-2 and Multi30k; random batches pad every row to the longest one in the
batch, which on CPU roughly triples the work. Like Hugging Face's `group_by_length`, we sort
pools of rows by length and cut them into batches, so padding is small and the batches are still
mixed across the dataset. Each dataset item is a whole padded batch: give the Trainer
`batch_size=1` and `collate_fn=first`. Batch order is reshuffled by the Trainer every epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

__all__ = ["GroupedBatches", "first", "grouped_indices"]


def grouped_indices(
    lengths: Sequence[int], batch_size: int, seed: int = 0, pool: int = 50
) -> list[np.ndarray]:
    """Index batches: shuffle, sort pools of `pool * batch_size` rows by length, cut."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    lens = np.asarray(lengths)
    batches = []
    step = pool * batch_size
    for start in range(0, len(order), step):
        chunk = order[start : start + step]
        chunk = chunk[np.argsort(lens[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return batches


class GroupedBatches(Dataset):
    """A dataset whose items are ready batches built by `make_batch(indices)`."""

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        make_batch: Callable[[np.ndarray], dict[str, Any]],
        seed: int = 0,
    ):
        self.batches = grouped_indices(lengths, batch_size, seed)
        self.make_batch = make_batch

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.make_batch(self.batches[i])


def first(items: list[Any]) -> Any:
    """collate_fn for GroupedBatches with batch_size=1."""
    return items[0]
