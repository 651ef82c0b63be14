"""Where a token is: learned absolute position embeddings, or rotary embeddings (RoPE).

Attention by itself is permutation-equivariant: without positions "dog bites man" and "man bites dog"
look alike. GPT-2 adds a learned vector per position to the token embedding (:class:`LearnedPositions`).
RoPE (Su et al. 2021, https://arxiv.org/abs/2104.09864) instead rotates each query and key by an angle
proportional to its position, so ``q_m · k_n`` depends only on ``m - n`` (:class:`RotaryEmbedding`).
"""

from __future__ import annotations

import torch
from torch import nn

POSITIONS = ("learned", "rope")


class LearnedPositions(nn.Module):
    """One learned C-vector per position 0 .. block_size - 1 (GPT-2)."""

    def __init__(self, block_size: int, dim: int) -> None:
        super().__init__()
        self.block_size = block_size
        self.weight = nn.Embedding(block_size, dim)

    def forward(self, t: int, offset: int = 0) -> torch.Tensor:
        """Embeddings of positions ``offset .. offset + t - 1``: (T, C).

        Raises:
            ValueError: the positions run past ``block_size``.
        """
        if offset + t > self.block_size:
            raise ValueError(f"sequence of {offset + t} tokens is longer than model.block_size={self.block_size}")
        return self.weight(torch.arange(offset, offset + t, device=self.weight.weight.device))

    def at(self, positions: torch.Tensor) -> torch.Tensor:
        """Embeddings of explicit ``positions`` (any shape, e.g. (B, T)) -> (*positions.shape, C).

        Raises:
            ValueError: a position is >= ``block_size``.
        """
        if int(positions.max()) >= self.block_size:
            raise ValueError(f"position {int(positions.max())} is >= model.block_size={self.block_size}")
        return self.weight(positions)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding for heads of size ``head_dim`` (even).

    Pair i of a head's channels (channel i with channel i + D/2, the GPT-NeoX / LLaMA layout) is
    rotated by the angle ``pos · base^(-2i/D)``. The cos/sin tables are buffers that are not saved in
    checkpoints (they are a function of the config).

    Raises:
        ValueError: ``head_dim`` is odd.
    """

    def __init__(self, head_dim: int, block_size: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head size, got n_embd / n_head = {head_dim}")
        self.block_size = block_size
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)  # (D/2,)
        angles = torch.arange(block_size, dtype=torch.float64)[:, None] * inv_freq[None, :]  # (T_max, D/2)
        angles = torch.cat((angles, angles), dim=-1)  # (T_max, D): the same angle for both members of a pair
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Rotate queries or keys ``x`` (B, H, T, D) at positions ``offset .. offset + T - 1``, or at explicit
        ``positions`` (T,) or (B, T) (a left-padded batch, a KV cache's next token).

        Raises:
            ValueError: a position runs past ``block_size``.
        """
        t = x.shape[-2]
        if positions is not None:
            if int(positions.max()) >= self.block_size:
                raise ValueError(f"position {int(positions.max())} is >= model.block_size={self.block_size}")
            cos, sin = self.cos[positions], self.sin[positions]  # (T, D) or (B, T, D)
            if cos.dim() == 3:
                cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, D): broadcast over heads
            return (x * cos + rotate_half(x) * sin).type_as(x)
        if offset + t > self.block_size:
            raise ValueError(f"sequence of {offset + t} tokens is longer than model.block_size={self.block_size}")
        cos, sin = self.cos[offset:offset + t], self.sin[offset:offset + t]  # (T, D), broadcast over B, H
        return (x * cos + rotate_half(x) * sin).type_as(x)
