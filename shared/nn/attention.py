"""Scaled dot-product attention, written out, with the masks a decoder needs.

``attention(Q, K, V) = softmax(Q Kᵀ / √d_k + mask) V`` (Vaswani et al. 2017, https://arxiv.org/abs/1706.03762).
Shapes: ``q`` (B, H, T_q, d), ``k`` and ``v`` (B, H, T_k, d); the output is (B, H, T_q, d).
Masks follow ``torch.nn.functional.scaled_dot_product_attention``: a boolean mask is True where a
query may attend, an additive float mask is added to the scores; both broadcast to (B, H, T_q, T_k).
:func:`sdpa` switches between this hand-written path and PyTorch's fused kernels (Flash/memory-efficient
on a GPU), which must agree with it (see ``shared/tests/test_attention.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

BACKENDS = ("manual", "torch")


def check_backend(backend: str) -> None:
    """Raises ValueError, listing the choices, unless ``backend`` is one of :data:`BACKENDS`."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend '{backend}'. Choose one of: {', '.join(BACKENDS)}")


def stable_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``exp(x - max) / sum(exp(x - max))`` along ``dim``: subtracting the row max keeps ``exp`` from
    overflowing (scores of +1e4 would be inf) without changing the result. Rows that are all ``-inf``
    (a query allowed to see nothing) give zeros instead of NaN."""
    m = x.amax(dim=dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(x - m)
    return e / e.sum(dim=dim, keepdim=True).clamp_min(torch.finfo(e.dtype).tiny)


def causal_mask(t_q: int, t_k: int | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean (T_q, T_k) mask, True where query i may attend to key j (j <= i + T_k - T_q).

    With ``T_k > T_q`` (new queries after a cache of earlier keys) the queries sit at the end.
    """
    t_k = t_q if t_k is None else t_k
    return torch.ones(t_q, t_k, dtype=torch.bool, device=device).tril(diagonal=t_k - t_q)


def padding_mask(lengths: torch.Tensor, t: int) -> torch.Tensor:
    """Boolean (B, 1, 1, T) key mask from the true length of each sequence: True on real tokens."""
    return (torch.arange(t, device=lengths.device)[None, :] < lengths[:, None])[:, None, None, :]


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))
    return mask.to(dtype)


def scaled_dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, is_causal: bool = False
) -> torch.Tensor:
    """The hand-written attention: (B, H, T_q, d), (B, H, T_k, d), (B, H, T_k, d_v) -> (B, H, T_q, d_v).

    Args:
        mask: boolean (True = attend) or additive float, broadcastable to (B, H, T_q, T_k).
        is_causal: also apply :func:`causal_mask`.

    Raises:
        ValueError: the head dimensions of q and k differ, or k and v have different lengths.
    """
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"attention shapes do not fit: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T_q, T_k)
    if is_causal:
        scores = scores + _additive(causal_mask(q.shape[-2], k.shape[-2], q.device), scores.dtype)
    if mask is not None:
        scores = scores + _additive(mask, scores.dtype)
    return stable_softmax(scores, dim=-1) @ v  # (B, H, T_q, d_v)


def sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, is_causal: bool = False,
    backend: str = "manual",
) -> torch.Tensor:
    """Attention through the chosen backend: ``manual`` (above) or ``torch``
    (``F.scaled_dot_product_attention``). Same arguments and shapes for both.

    Raises:
        ValueError: unknown backend.
    """
    check_backend(backend)
    if backend == "manual":
        return scaled_dot_product_attention(q, k, v, mask, is_causal)
    # torch's is_causal aligns the mask top-left when T_q != T_k, and takes either it or attn_mask:
    # build the (bottom-right aligned) causal mask explicitly in those cases.
    if is_causal and (mask is not None or q.shape[-2] != k.shape[-2]):
        causal = causal_mask(q.shape[-2], k.shape[-2], q.device)
        if mask is None:
            mask = causal
        else:
            mask = (causal & mask) if mask.dtype == torch.bool else mask + _additive(causal, mask.dtype)
        is_causal = False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
