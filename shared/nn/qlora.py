"""QLoRA written by hand: a frozen linear layer stored as NF4 (dequantised for each matmul) plus a LoRA branch.

Dettmers et al. 2023, "QLoRA", https://arxiv.org/abs/2305.14314: the base weight lives only as 4-bit codes and block
scales (:mod:`shared.nn.nf4`, bitsandbytes' format); each forward dequantises it to ``compute_dtype`` and multiplies,
and the backward dequantises it *again* instead of saving it, so no full-precision copy of W outlives a matmul (what
bitsandbytes' ``MatMul4Bit`` does too). W gets no gradient; only the fp32 LoRA ``A`` and ``B`` train, initialised and
scaled exactly as :class:`shared.nn.lora.LoRALinear` (Hu et al. 2021, https://arxiv.org/abs/2106.09685). Pure torch:
it runs wherever torch runs, including CPUs where bitsandbytes' 4-bit inference path has no autograd.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from shared.nn.lora import LoRAError
from shared.nn.nf4 import NF4Tensor, dequantize_nf4, quantize_nf4

_SCALES = ("absmax", "absmax_scale", "absmax_offset")  # fp32 buffers that must stay fp32 under module.to(dtype)


class _NF4Linear(torch.autograd.Function):
    """``F.linear(x, dequant(W), bias)`` saving only the NF4 codes and scales (a few % of W's fp bytes); the backward
    dequantises W again for the input gradient ``g W``. No gradient for the codes; a bias gradient only if asked."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bias: torch.Tensor | None, meta: tuple, *stored: torch.Tensor | None):
        ctx.meta = meta
        ctx.save_for_backward(*stored)
        return F.linear(x, _weight(meta, stored), bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, g: torch.Tensor):
        gx = g @ _weight(ctx.meta, ctx.saved_tensors) if ctx.needs_input_grad[0] else None  # (..., out) @ (out, in)
        gb = g.reshape(-1, g.shape[-1]).sum(0) if ctx.needs_input_grad[1] else None
        return (gx, gb, None) + (None,) * len(ctx.saved_tensors)


def _weight(meta: tuple, stored: tuple) -> torch.Tensor:
    shape, dtype, block_size, double_quant, compute_dtype = meta
    return dequantize_nf4(NF4Tensor(stored[0], stored[1], shape, dtype, block_size, double_quant, *stored[2:]),
                          compute_dtype)


class QLoRALinear(nn.Module):
    """``F.linear(x, dequant(W_nf4), b) + (alpha / r) · dropout(x) Aᵀ Bᵀ`` around a frozen ``nn.Linear``.

    Shapes: x (..., in_features) -> (..., out_features) in x's dtype; ``lora_A`` (r, in), ``lora_B`` (out, r), fp32.
    The base weight is kept only as buffers (``codes``, ``absmax`` or ``absmax_codes``/``absmax_scale``/
    ``absmax_offset``: they follow ``.to()`` and appear in ``state_dict``); no reference to ``base.weight`` is kept,
    so the fp weight is freed once the caller drops ``base``. The bias is kept, frozen. The base matmul runs in
    ``compute_dtype`` (bf16 by default: NF4 is a storage format), the adapter in fp32, its output cast to the
    matmul's dtype before the sum (as peft does over bitsandbytes).

    Raises:
        LoRAError: r ≤ 0. ValueError: a bad ``block_size`` (see :func:`shared.nn.nf4.quantize_nf4`).
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0, *, block_size: int = 64,
                 double_quant: bool = True, compute_dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        if r <= 0:
            raise LoRAError(f"rank r={r}: must be a positive integer")
        if not compute_dtype.is_floating_point:
            raise ValueError(f"compute_dtype={compute_dtype}: use torch.bfloat16, torch.float16 or torch.float32")
        q = quantize_nf4(base.weight.detach(), block_size, double_quant)
        self.shape, self.weight_dtype, self.block_size, self.double_quant = q.shape, q.dtype, block_size, double_quant
        self.compute_dtype = compute_dtype
        for name, t in q.tensors().items():
            self.register_buffer(name, t)
        self.bias = base.bias  # the Parameter itself (frozen), not a copy
        if self.bias is not None:
            self.bias.requires_grad_(False)
        dev = base.weight.device
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=dev))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, device=dev))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # LoRALinear's (and peft's) init, same RNG draws
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self._inference_weight: torch.Tensor | None = None  # set by dequantized_for_inference
        self.adapter_enabled = True  # False: the layer is its NF4 base (see shared.nn.lora.adapters_disabled)

    @property
    def in_features(self) -> int:
        return self.shape[1]

    @property
    def out_features(self) -> int:
        return self.shape[0]

    def nf4(self) -> NF4Tensor:
        """The stored weight as an :class:`NF4Tensor` (sharing the buffers)."""
        return NF4Tensor(self.codes, self.absmax, self.shape, self.weight_dtype, self.block_size, self.double_quant,
                         self.absmax_codes, self.absmax_scale, self.absmax_offset)

    def dequantized_weight(self) -> torch.Tensor:
        """(out, in) the base weight decoded to ``compute_dtype`` (a fresh tensor, no grad)."""
        return dequantize_nf4(self.nf4(), self.compute_dtype)

    @property
    def weight(self) -> torch.Tensor:  # code that reads ``module.weight`` (dtype, shape, device) keeps working
        return self.dequantized_weight()

    def delta_weight(self) -> torch.Tensor:
        """(out, in) the update ``(alpha / r) · B A`` the adapter adds to ``W``."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(self.compute_dtype)
        meta = (self.shape, self.weight_dtype, self.block_size, self.double_quant, self.compute_dtype)
        if self._inference_weight is not None and not torch.is_grad_enabled():  # the same W, decoded once
            y = F.linear(x.to(self.compute_dtype), self._inference_weight, bias)
        else:
            stored = tuple(self.nf4().tensors().values())
            y = _NF4Linear.apply(x.to(self.compute_dtype), bias, meta, *stored)  # (..., out), compute_dtype
        if not self.adapter_enabled:
            return y.to(x.dtype)
        h = self.dropout(x.to(self.lora_A.dtype)) @ self.lora_A.T  # (..., r), fp32
        return (y + (h @ self.lora_B.T * self.scaling).to(y.dtype)).to(x.dtype)

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001
        """``.to(device)`` moves every buffer; ``.to(dtype)``/``.half()`` must not round the fp32 scales (the codes,
        uint8, are never cast), so the scales only follow the codes' device."""
        scales = {n: self._buffers[n] for n in _SCALES if self._buffers.get(n) is not None}
        for n in scales:
            self._buffers[n] = None
        super()._apply(fn, recurse)
        for n, t in scales.items():
            self._buffers[n] = t.to(self.codes.device)
        return self

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, r={self.r}, alpha={self.alpha}, nf4 "
                f"block_size={self.block_size}, double_quant={self.double_quant}, compute_dtype={self.compute_dtype}")


@contextmanager
def dequantized_for_inference(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block, every :class:`QLoRALinear` of ``model`` decodes its weight once and reuses it for its
    no-grad forwards (generation decodes token by token: re-decoding every weight per token is most of its time).
    The outputs are bit-identical (the same decoded W enters the same ``F.linear``); the cost is a full
    ``compute_dtype`` copy of each weight for the duration of the block (what bitsandbytes' CPU inference repack
    trades too). Forwards that record gradients still decode per matmul and save nothing full-size."""
    layers = [m for m in model.modules() if isinstance(m, QLoRALinear)]
    try:
        with torch.no_grad():
            for m in layers:
                m._inference_weight = m.dequantized_weight()
        yield model
    finally:
        for m in layers:
            m._inference_weight = None


def quantized_bytes(model: nn.Module) -> int:
    """Bytes of NF4 storage (codes and scales) over ``model``'s :class:`QLoRALinear` layers."""
    return sum(m.nf4().nbytes for m in model.modules() if isinstance(m, QLoRALinear))
