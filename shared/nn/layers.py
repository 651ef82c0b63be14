"""The transformer's position-wise layers, written out: LayerNorm, RMSNorm, the GELU MLP and SwiGLU.

All of them map (B, T, C) -> (B, T, C) and act on each position independently (the last dimension only).
Each is checked against PyTorch's own layer in ``shared/tests/test_layers.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu")


def default_mlp_width(kind: str, dim: int) -> int:
    """The hidden width of an MLP of width ``dim`` when none is set: ``4 dim`` for ``gelu`` (GPT-2); for ``swiglu``
    ``8 dim / 3`` rounded up to a multiple of 64, which keeps the parameter count of the 4x GELU MLP with three
    matrices instead of two (the LLaMA convention)."""
    return 4 * dim if kind == "gelu" else 64 * -(-(8 * dim // 3) // 64)


class LayerNorm(nn.Module):
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over the last dimension (Ba et al. 2016,
    https://arxiv.org/abs/1607.06450). ``var`` is the biased (1/C) variance, as in ``nn.LayerNorm``.

    Args:
        dim: C, the size of the last dimension.
        bias: learn a bias (GPT-2 does; many newer models drop it).
    """

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., C) -> (..., C)
        mean = x.mean(dim=-1, keepdim=True)
        var = (x - mean).pow(2).mean(dim=-1, keepdim=True)
        y = (x - mean) * torch.rsqrt(var + self.eps) * self.weight
        return y + self.bias if self.bias is not None else y


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x²) + eps) * weight``: LayerNorm without centring or bias (Zhang & Sennrich 2019,
    https://arxiv.org/abs/1910.07467), cheaper and as good in practice (LLaMA, Mistral)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., C) -> (..., C)
        # In float32 even under bf16 autocast: the mean of squares loses too much in 8 mantissa bits.
        x32 = x.float()
        y = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return y.type_as(x) * self.weight


class MLP(nn.Module):
    """GPT-2's feed-forward layer: ``proj(GELU(fc(x)))`` with a hidden width of ``4 C`` (Radford et al. 2019).

    Uses the exact (erf) GELU (Hendrycks & Gimpel 2016, https://arxiv.org/abs/1606.08415).
    """

    def __init__(self, dim: int, hidden: int | None = None, bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = hidden or default_mlp_width("gelu", dim)
        self.c_fc = nn.Linear(dim, hidden, bias=bias)
        self.c_proj = nn.Linear(hidden, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))  # c_fc: (B, T, 4C)


class SwiGLU(nn.Module):
    """Gated feed-forward layer ``proj(SiLU(gate(x)) * up(x))`` (Shazeer 2020, https://arxiv.org/abs/2002.05202).

    The default hidden width ``8C/3`` (rounded up to a multiple of 64) keeps the parameter count of a
    ``4C`` GELU MLP, since SwiGLU has three matrices instead of two (the LLaMA convention).
    """

    def __init__(self, dim: int, hidden: int | None = None, bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = hidden or default_mlp_width("swiglu", dim)
        self.c_gate = nn.Linear(dim, hidden, bias=bias)
        self.c_fc = nn.Linear(dim, hidden, bias=bias)
        self.c_proj = nn.Linear(hidden, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        return self.dropout(self.c_proj(F.silu(self.c_gate(x)) * self.c_fc(x)))  # hidden: (B, T, H)


def build_norm(kind: str, dim: int, bias: bool = True, eps: float = 1e-5) -> nn.Module:
    """``layernorm`` or ``rmsnorm`` over a last dimension of size ``dim``.

    Raises:
        ValueError: unknown kind (the message lists the known ones).
    """
    if kind == "layernorm":
        return LayerNorm(dim, eps=eps, bias=bias)
    if kind == "rmsnorm":
        return RMSNorm(dim, eps=eps)
    raise ValueError(f"unknown model.norm '{kind}'. Choose one of: {', '.join(NORMS)}")


def build_mlp(kind: str, dim: int, bias: bool = True, dropout: float = 0.0, hidden: int | None = None) -> nn.Module:
    """``gelu`` (:class:`MLP`) or ``swiglu`` (:class:`SwiGLU`) with ``hidden`` units (None: each one's default).

    Raises:
        ValueError: unknown kind (the message lists the known ones).
    """
    if kind == "gelu":
        return MLP(dim, hidden, bias=bias, dropout=dropout)
    if kind == "swiglu":
        return SwiGLU(dim, hidden, bias=bias, dropout=dropout)
    raise ValueError(f"unknown model.mlp '{kind}'. Choose one of: {', '.join(MLPS)}")
