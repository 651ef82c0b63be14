"""Multi-head causal self-attention: fused QKV projection, head split, attention, head merge, output projection.

Shapes, with C = n_embd, H = n_head and D = C / H:
``x`` (B, T, C) -> ``qkv`` (B, T, 3C) -> q, k, v each (B, T, C) -> split to (B, H, T, D) -> attention
(B, H, T, D) -> merge to (B, T, C) -> ``c_proj`` -> (B, T, C). Each head attends in its own D-dimensional
subspace; one (C, 3C) matmul computes all heads' queries, keys and values at once.
"""

from __future__ import annotations

import torch
from torch import nn

from shared.nn.attention import check_backend, sdpa
from shared.nn.kv_cache import KVCache
from shared.nn.positions import RotaryEmbedding


def split_heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """(B, T, C) -> (B, H, T, C/H)."""
    b, t, c = x.shape
    return x.view(b, t, n_head, c // n_head).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, D) -> (B, T, H·D): the exact inverse of :func:`split_heads`."""
    b, h, t, d = x.shape
    return x.transpose(1, 2).contiguous().view(b, t, h * d)


class CausalSelfAttention(nn.Module):
    """Masked multi-head self-attention (Vaswani et al. 2017, https://arxiv.org/abs/1706.03762).

    Args:
        n_embd: C, the model width.
        n_head: H; must divide C.
        bias: biases in the two projections.
        dropout: on the output (residual) projection.
        backend: ``manual`` (:func:`shared.nn.attention.scaled_dot_product_attention`) or ``torch``
            (``F.scaled_dot_product_attention``: Flash / memory-efficient kernels on a GPU).
        rope: rotate q and k with this :class:`RotaryEmbedding` (None: positions come from elsewhere).

    Raises:
        ValueError: ``n_embd`` is not a multiple of ``n_head``, or an unknown backend.
    """

    def __init__(self, n_embd: int, n_head: int, bias: bool = True, dropout: float = 0.0, backend: str = "manual",
                 rope: RotaryEmbedding | None = None) -> None:
        super().__init__()
        check_heads(n_embd, n_head)
        check_backend(backend)
        self.n_head, self.backend, self.rope = n_head, backend, rope
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)  # fused q, k, v
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None,
                positions: torch.Tensor | None = None, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        """(B, T, C) -> (B, T, C); position t sees positions <= t only.

        Args:
            key_mask: optional boolean (B, 1, 1, T_k), True on real tokens (see
                :func:`shared.nn.attention.padding_mask`): padded keys are never attended to. With a cache T_k
                counts the cached keys too.
            positions: optional (T,) or (B, T) positions for RoPE (default ``0 .. T-1``).
            cache: keys and values of the earlier positions; this call's are appended to it (``layer``'s slot) and
                the T new queries attend to all of them (the causal mask aligned to the end).
        """
        q, k, v = self.c_attn(x).split(x.shape[-1], dim=-1)  # 3 x (B, T, C)
        q, k, v = (split_heads(t, self.n_head) for t in (q, k, v))  # 3 x (B, H, T, D)
        if self.rope is not None:
            q, k = self.rope(q, positions=positions), self.rope(k, positions=positions)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, H, length + T, D)
        y = sdpa(q, k, v, mask=key_mask, is_causal=True, backend=self.backend)  # (B, H, T, D)
        return self.resid_dropout(self.c_proj(merge_heads(y)))


def check_heads(n_embd: int, n_head: int) -> None:
    """Raises ValueError, with the valid head counts, unless ``n_head`` divides ``n_embd``."""
    if n_head < 1 or n_embd % n_head:
        divisors = ", ".join(str(d) for d in range(1, n_embd + 1) if n_embd % d == 0 and d <= 64)
        raise ValueError(
            f"model.n_embd={n_embd} is not divisible by model.n_head={n_head}: each head gets n_embd / n_head "
            f"channels. Pick n_head among the divisors of n_embd (e.g. {divisors})."
        )
