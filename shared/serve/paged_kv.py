"""A paged KV cache: keys and values in fixed-size blocks of a shared pool, each sequence owning a block table.

A contiguous cache (:class:`shared.nn.kv_cache.KVCache`) reserves ``max_len`` positions per sequence up front, so a
server that does not know how long each answer will be wastes most of its memory on reservations. PagedAttention
(Kwon et al. 2023, "Efficient Memory Management for Large Language Model Serving with PagedAttention",
https://arxiv.org/abs/2309.06180) stores keys and values in blocks of ``block_size`` positions taken from one pool
as a sequence grows; a sequence's *block table* lists its blocks in order, like a page table maps virtual pages to
physical frames. Waste is at most one partly filled block per sequence, and a finished sequence's blocks go back to
the pool at once for the next request.

Layout: one pool per K and V of shape (n_layer, num_blocks · block_size, H, D); position ``p`` of a sequence lives in
slot ``table[p // block_size] · block_size + p % block_size``. vLLM's kernel reads the blocks in place; here
:meth:`PagedBatch.update` gathers a batch's keys into a contiguous (B, H, T_k, D) tensor so the model's own attention
(hand-written or SDPA) runs unchanged: the same result, an extra copy per layer and step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class OutOfBlocks(RuntimeError):
    """The pool has fewer free blocks than a sequence needs (the engine's admission control prevents it)."""


class BlockAllocator:
    """The free list of a pool of ``num_blocks`` blocks.

    Raises:
        ValueError: ``num_blocks`` < 1.
    """

    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 1:
            raise ValueError(f"a block pool needs num_blocks >= 1, got {num_blocks}")
        self.num_blocks = num_blocks
        self._free = list(range(num_blocks - 1, -1, -1))  # pop() hands out block 0 first
        self._used: set[int] = set()

    @property
    def num_free(self) -> int:
        return len(self._free)

    def allocate(self, n: int) -> list[int]:
        """``n`` free blocks, now owned by the caller.

        Raises:
            OutOfBlocks: fewer than ``n`` are free.
        """
        if n > len(self._free):
            raise OutOfBlocks(f"need {n} KV blocks, {len(self._free)} of {self.num_blocks} are free")
        blocks = [self._free.pop() for _ in range(n)]
        self._used.update(blocks)
        return blocks

    def release(self, blocks: Sequence[int]) -> None:
        """Give ``blocks`` back to the pool.

        Raises:
            ValueError: a block that is not allocated (a double free: a bookkeeping bug).
        """
        for b in blocks:
            if b not in self._used:
                raise ValueError(f"KV block {b} is released but was not allocated (double free?)")
            self._used.remove(b)
            self._free.append(b)


class PagedKVCache:
    """The K and V pools and the block table of every live sequence.

    Args:
        n_layer, n_head, head_dim: the model's shape.
        num_blocks: blocks in the pool; with ``block_size`` it bounds the tokens held at once.
        block_size: positions per block (vLLM's default is 16).
        dtype, device: the model's.

    Raises:
        ValueError: a size < 1.
    """

    def __init__(self, n_layer: int, n_head: int, head_dim: int, num_blocks: int, block_size: int = 16,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> None:
        if min(n_layer, n_head, head_dim, block_size) < 1:
            raise ValueError(f"a paged KV cache needs sizes >= 1, got n_layer={n_layer}, n_head={n_head}, "
                             f"head_dim={head_dim}, block_size={block_size}")
        self.allocator = BlockAllocator(num_blocks)
        self.block_size = block_size
        shape = (n_layer, num_blocks * block_size, n_head, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.tables: dict[int, list[int]] = {}
        self.lengths: dict[int, int] = {}

    @property
    def nbytes(self) -> int:
        """Bytes of the two pools: ``2 · n_layer · num_blocks · block_size · n_embd · element size``."""
        return self.k.nbytes + self.v.nbytes

    def blocks_for(self, n_tokens: int) -> int:
        """Blocks that hold ``n_tokens`` positions: ⌈n_tokens / block_size⌉."""
        return -(-n_tokens // self.block_size)

    def add_sequence(self, seq_id: int) -> None:
        """Start an empty block table for ``seq_id``.

        Raises:
            ValueError: the id is already live.
        """
        if seq_id in self.tables:
            raise ValueError(f"sequence {seq_id} already has a block table")
        self.tables[seq_id], self.lengths[seq_id] = [], 0

    def free_sequence(self, seq_id: int) -> None:
        """Return the sequence's blocks to the pool and forget it."""
        self.allocator.release(self.tables.pop(seq_id))
        del self.lengths[seq_id]

    def reserve(self, seq_id: int, n_new: int) -> None:
        """Grow the sequence's table so ``length + n_new`` positions fit.

        Raises:
            OutOfBlocks: the pool cannot supply the blocks (nothing is allocated then).
        """
        table = self.tables[seq_id]
        missing = self.blocks_for(self.lengths[seq_id] + n_new) - len(table)
        if missing > 0:
            table.extend(self.allocator.allocate(missing))

    def batch(self, seq_ids: Sequence[int], n_new: int) -> PagedBatch:
        """The view one forward pass of ``n_new`` tokens per sequence writes to and reads from (tables grown
        first).

        Raises:
            OutOfBlocks: see :meth:`reserve`.
        """
        for s in seq_ids:
            self.reserve(s, n_new)
        return PagedBatch(self, list(seq_ids), n_new)


class PagedBatch:
    """A forward pass over B live sequences, each getting ``n_new`` tokens: what ``GPT.forward(kv_cache=)`` needs.

    It has the interface of :class:`shared.nn.kv_cache.KVCache` that the attention uses (``update`` per layer,
    ``advance`` once), plus the ``attention_mask`` (B, T_k) and ``position_ids`` (B, n_new) the caller passes with
    it, since the rows have different lengths. T_k = the longest row's length + n_new; a shorter row's keys are
    padded on the right and masked.
    """

    def __init__(self, cache: PagedKVCache, seq_ids: list[int], n_new: int) -> None:
        self.cache, self.seq_ids, self.n_new = cache, seq_ids, n_new
        device = cache.k.device
        starts = torch.tensor([cache.lengths[s] for s in seq_ids], device=device)  # (B,)
        self.t_k = int(starts.max()) + n_new
        bs = cache.block_size
        width = cache.blocks_for(self.t_k)
        tables = torch.tensor([cache.tables[s] + [0] * (width - len(cache.tables[s])) for s in seq_ids],
                              device=device)  # (B, blocks), padded with block 0
        pos = torch.arange(self.t_k, device=device)  # (T_k,)
        slots = tables[:, pos // bs] * bs + pos % bs  # (B, T_k): where each key position lives in the pool
        self.position_ids = starts[:, None] + torch.arange(n_new, device=device)  # (B, n_new)
        self.attention_mask = pos[None, :] < (starts + n_new)[:, None]  # (B, T_k): True on real keys
        self._write = slots.gather(1, self.position_ids).reshape(-1)  # (B · n_new,) slots of the new keys
        self._read = slots  # padding reads block 0's slots, masked out by attention_mask

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this pass's keys and values (B, H, n_new, D) into their slots; return every row's keys and values,
        (B, H, T_k, D) each, gathered from its blocks."""
        b, h, t, d = k.shape
        self.cache.k[layer, self._write] = k.transpose(1, 2).reshape(b * t, h, d)
        self.cache.v[layer, self._write] = v.transpose(1, 2).reshape(b * t, h, d)
        return (self.cache.k[layer, self._read].transpose(1, 2),  # (B, T_k, H, D) -> (B, H, T_k, D)
                self.cache.v[layer, self._read].transpose(1, 2))

    def advance(self, t: int) -> None:
        """Every row is ``t`` positions longer (the model calls it once, after its last layer)."""
        for s in self.seq_ids:
            self.cache.lengths[s] += t
