"""Batch sampling that is deterministic, shardable across ranks, and resumable.

Random LM windows (:func:`random_batch`) are a pure function of ``(seed, index, rank, world_size)``: nothing to
save, any step reproducible, and N ranks draw N disjoint slices of one global draw.

Epochs over a dataset (:class:`ResumableBatchSampler`) are built from torch's own pieces: ``DistributedSampler`` gives the seeded per-epoch permutation and
the rank's shard (it works without a process group when ``num_replicas``/``rank`` are given),
``BatchSampler`` groups indices. What this adds is starting an epoch at batch ``k``, so that a
resumed run sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, Sampler

from shared.config import ConfigError
from shared.data.fetch import DatasetError
from shared.device import to_device


class TooFewTokensError(DatasetError, ValueError):
    """A token stream is shorter than one window of ``block_size + 1`` tokens (the message names the stream,
    ``model.block_size`` and the fix)."""


def check_stream_length(n_tokens: int, block_size: int, what: str = "the token stream", fix: str = "") -> None:
    """Raises :class:`TooFewTokensError` unless ``n_tokens`` holds one window of ``block_size + 1`` tokens.

    Args:
        what: names the stream in the message ("the validation split", a file).
        fix: what to do instead of the default (a smaller ``model.block_size`` or more text).
    """
    if n_tokens >= block_size + 1:
        return
    shorter = (f"lower model.block_size to at most {n_tokens - 1:,}, or " if n_tokens >= 2 else "")
    fix = fix or (f"{shorter}give it more text (a larger corpus; for the validation split, a larger "
                  "data.val_frac)")
    raise TooFewTokensError(
        f"{what} has {n_tokens:,} tokens, too few for model.block_size={block_size:,}: one window needs block_size + 1 "
        f"= {block_size + 1:,} tokens. Fix: {fix}.")


class ResumableBatchSampler(Sampler[list[int]]):
    """Yields lists of indices (one list per batch) for one rank's shard of an epoch.

    Args:
        dataset_len: number of samples N.
        batch_size: samples per batch on this rank (the micro batch).
        shuffle: a fresh permutation per epoch, a function of ``seed + epoch`` only.
        seed: permutation seed.
        rank, world_size: this process's shard (see ``DistributedSampler``).
        drop_last: drop the last incomplete batch.
    """

    def __init__(
        self,
        dataset_len: int,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.sampler = DistributedSampler(
            range(dataset_len), num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed
        )
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's permutation and skip its first ``start_batch`` batches."""
        self.sampler.set_epoch(epoch)
        self.start_batch = start_batch

    def _batches(self) -> BatchSampler:
        return BatchSampler(self.sampler, self.batch_size, self.drop_last)

    def __iter__(self) -> Iterator[list[int]]:
        return itertools.islice(iter(self._batches()), self.start_batch, None)

    def __len__(self) -> int:
        return max(len(self._batches()) - self.start_batch, 0)

    @property
    def batches_per_epoch(self) -> int:
        """Batches in a whole epoch on this rank (ignoring ``start_batch``)."""
        return len(self._batches())


def batch_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
    num_workers: int = 0,
) -> DataLoader:
    """A ``DataLoader`` that fetches whole batches at once (``dataset[list_of_indices]``).

    For in-memory tensor datasets this avoids per-sample indexing and collation, which dominate
    the step time of small models. ``loader.sampler`` is the :class:`ResumableBatchSampler`.
    """
    sampler = ResumableBatchSampler(len(dataset), batch_size, shuffle, seed, rank, world_size, drop_last)
    return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=num_workers)


def train_val_split(n: int, val_size: int, split_seed: int, train_subset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of a fixed train/val split of ``n`` training examples: a seeded permutation, the
    first ``val_size`` to val, the rest to train (only its first ``train_subset`` when that is > 0).

    The split depends on ``split_seed`` alone, so every training seed sees the same val set.

    Raises:
        ConfigError: ``val_size`` is not in (0, n) (a ``ValueError``).
    """
    if not 0 < val_size < n:
        raise ConfigError(f"data.val_size={val_size}: must be in (0, {n}), the training set has {n:,} examples. Fix: "
                          f"set data.val_size between 1 and {n - 1:,}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    train_idx, val_idx = perm[val_size:], perm[:val_size]
    return (train_idx[:train_subset] if train_subset else train_idx), val_idx


def random_batch(data: torch.Tensor | np.ndarray, batch_size: int, block_size: int, seed: int, index: int,
                 device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows of ``block_size + 1`` tokens of a stream: rank ``rank``'s share of micro-batch
    ``index``, a pure function of ``(seed, index, rank, world_size)``.

    One generator seeded by ``(seed, index)`` draws ``batch_size x world_size`` offsets and rank r takes the r-th
    slice, so the ranks' micro-batches never come from separate streams and their union is exactly the one-process
    micro-batch of ``batch_size x world_size`` windows (with one rank, the draw of earlier weeks, unchanged).

    Args:
        data: (N,) token stream: an int64 tensor, or a NumPy array / memmap of any integer dtype (only the
            batch's tokens are read from it).
        index: which micro-batch (the loop uses ``step x grad_accum_steps + i``).

    Returns:
        ``x``, ``y``: (B, T) int64 on ``device``, ``y`` being ``x`` shifted by one position.

    Raises:
        TooFewTokensError: the stream is shorter than ``block_size + 1`` tokens.
        ValueError: ``rank`` is not in ``[0, world_size)``.
    """
    check_stream_length(len(data), block_size)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    g = torch.Generator().manual_seed(seed * 1_000_003 + index)
    offsets = torch.randint(len(data) - block_size, (batch_size * world_size,), generator=g)
    offsets = offsets[rank * batch_size:(rank + 1) * batch_size]
    idx = offsets[:, None] + torch.arange(block_size + 1)[None, :]  # (B, T+1)
    chunk = torch.from_numpy(data[idx.numpy()].astype(np.int64)) if isinstance(data, np.ndarray) else data[idx]
    return to_device(chunk[:, :-1], device), to_device(chunk[:, 1:], device)
