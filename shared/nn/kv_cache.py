"""A key/value cache for autoregressive decoding: each layer's keys and values, pre-allocated, filled left to right.

Without a cache, generating token t+1 runs the whole prefix 0..t through the model again: O(T²) work over T tokens,
most of it recomputing keys and values that did not change. With one, the prompt is run once (the *prefill*), its
keys and values are kept, and each *decode* step runs only the newest token, whose query attends to every cached
key (Pope et al. 2022, "Efficiently Scaling Transformer Inference", https://arxiv.org/abs/2211.05102). The memory
is ``2 · n_layer · B · T_max · n_embd`` elements: two tensors (K and V) of shape (B, n_head, T_max, head_dim) per
layer, allocated once so decoding never reallocates (the static cache of ``transformers``' ``StaticCache``).
"""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values of every layer for a batch of B sequences, ``max_len`` positions each.

    ``length`` positions are filled (the same for every row: a left-padded batch masks its padding instead).
    A forward pass writes its T new keys/values at ``length .. length + T - 1`` in every layer
    (:meth:`update`), then the model calls :meth:`advance` once.

    Args:
        n_layer, batch, n_head, max_len, head_dim: the buffer shape, (n_layer, B, H, T_max, D) for K and for V.
        dtype, device: of the buffers (the model's).

    Raises:
        ValueError: a size < 1.
    """

    def __init__(self, n_layer: int, batch: int, n_head: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> None:
        if min(n_layer, batch, n_head, max_len, head_dim) < 1:
            raise ValueError(f"a KV cache needs sizes >= 1, got n_layer={n_layer}, batch={batch}, n_head={n_head}, "
                             f"max_len={max_len}, head_dim={head_dim}")
        shape = (n_layer, batch, n_head, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    @property
    def nbytes(self) -> int:
        """Bytes of the two buffers: ``2 · n_layer · B · T_max · n_embd · element size``."""
        return self.k.nbytes + self.v.nbytes

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new keys and values (B, H, T, D) of ``layer`` after the filled part; return all of that layer's
        keys and values so far, (B, H, length + T, D) each (views of the buffers, no copy).

        Raises:
            ValueError: the cache would run past ``max_len``.
        """
        end = self.length + k.shape[-2]
        if end > self.max_len:
            raise ValueError(f"the KV cache holds {self.max_len} positions; writing {k.shape[-2]} after "
                             f"{self.length} would need {end}. Allocate a longer cache (at most model.block_size)")
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, t: int) -> None:
        """Mark ``t`` more positions filled (the model calls it once per forward, after its last layer)."""
        self.length += t

    def reset(self) -> None:
        """Empty the cache for a new batch of prompts (the buffers stay allocated)."""
        self.length = 0
