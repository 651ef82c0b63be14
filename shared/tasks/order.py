"""Which examples a micro-batch holds: an endless stream over a fixed example set, reshuffled every epoch.

Shared by the fine-tuning tasks (SFT, DPO): micro-batch ``index`` for ``rank`` of ``world_size`` takes stream
positions ``p = (index x world_size + rank) x size + j``; position ``p`` is example ``order(p // n)[p % n]`` where
``order(e)`` is a permutation seeded by ``seed + e``. A pure function of its arguments, so a resumed run sees exactly
the batches it would have seen, and the ranks' micro-batches together are the one-process micro-batch.
"""

from __future__ import annotations

import numpy as np


class EpochOrder:
    """The shuffled stream over ``n`` examples (see the module docstring).

    Raises:
        ValueError: ``n`` is not positive.
    """

    def __init__(self, n: int, seed: int) -> None:
        if n <= 0:
            raise ValueError(f"an example stream needs at least one example, got n={n}")
        self.n, self.seed = n, seed
        self._orders: dict[int, np.ndarray] = {}

    def order(self, epoch: int) -> np.ndarray:
        """The permutation of epoch ``epoch`` (the last one asked for is cached)."""
        if epoch not in self._orders:
            self._orders = {epoch: np.random.default_rng(self.seed + epoch).permutation(self.n)}
        return self._orders[epoch]

    def indices(self, index: int, rank: int, world_size: int, size: int) -> list[int]:
        """The example indices of micro-batch ``index`` of ``rank``."""
        start = (index * world_size + rank) * size
        return [int(self.order(p // self.n)[p % self.n]) for p in range(start, start + size)]

    def epoch_at(self, index: int, world_size: int, size: int) -> float:
        """Epochs of the example set seen after micro-batch ``index`` (over every rank)."""
        return (index + 1) * world_size * size / self.n
