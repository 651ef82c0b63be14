"""QLoRA written by hand: a frozen linear layer stored as NF4 (dequantised for each matmul) plus a LoRA branch.

Dettmers et al. 2023, https://arxiv.org/abs/2305.14314: the base weight lives as 4-bit codes and block scales
(:mod:`shared.nn.nf4`); each forward dequantises it to ``compute_dtype`` and multiplies; the backward dequantises it
again instead of keeping it, so no full-precision copy of W outlives a matmul. Only the fp32 LoRA A and B train.
It runs on any device torch runs on, including CPUs where bitsandbytes' 4-bit kernels have no autograd.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from shared.nn.lora import LoRAError
from shared.nn.nf4 import NF4Tensor, dequantize_nf4, quantize_nf4


class _NF4Linear(torch.autograd.Function):
    """``x Wᵀ`` with W dequantised in the forward and again in the backward (the input gradient ``g W``); W gets no
    gradient, so nothing but the module reference is saved."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: QLoRALinear) -> torch.Tensor:  # noqa: ANN001
        ctx.layer = layer
        return x @ layer.dequantized_weight().T

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
        return g @ ctx.layer.dequantized_weight().to(g.dtype), None


class QLoRALinear(nn.Module):
    """``dequant(W_nf4) x + b + (alpha / r) · dropout(x) Aᵀ Bᵀ``. Shapes: x (..., in) -> (..., out).

    The base weight is kept only as buffers (``codes``, the block scales); the original ``nn.Linear``'s weight is
    not referenced. The matmul runs in ``compute_dtype`` (bf16 by default: NF4 is a storage format), the adapter in
    fp32; the output has the input's dtype.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0, *, block_size: int = 64,
                 double_quant: bool = True, compute_dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        if r <= 0:
            raise LoRAError(f"rank r={r}: must be a positive integer")
        q = quantize_nf4(base.weight.data, block_size, double_quant)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.block_size, self.shape, self.compute_dtype = block_size, q.shape, compute_dtype
        for name in ("codes", "absmax", "absmax_codes", "absmax_scale", "absmax_offset"):
            self.register_buffer(name, getattr(q, name))
        self.bias = None if base.bias is None else nn.Parameter(base.bias.data.clone(), requires_grad=False)
        dev = base.weight.device
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, device=dev))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, device=dev))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def nf4(self) -> NF4Tensor:
        return NF4Tensor(self.codes, self.absmax, self.shape, torch.float32, self.block_size, self.absmax_codes,
                         self.absmax_scale, self.absmax_offset)

    def dequantized_weight(self) -> torch.Tensor:
        """(out, in) the base weight in ``compute_dtype``."""
        return dequantize_nf4(self.nf4(), self.compute_dtype)

    @property
    def weight(self) -> torch.Tensor:
        return self.dequantized_weight()

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _NF4Linear.apply(x.to(self.compute_dtype), self)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        h = self.dropout(x.to(self.lora_A.dtype)) @ self.lora_A.T  # (..., r)
        return (y.float() + h @ self.lora_B.T * self.scaling).to(x.dtype)

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, r={self.r}, alpha={self.alpha}, nf4 block "
                f"{self.block_size}, double_quant={self.absmax_codes is not None}, compute={self.compute_dtype}")


def quantized_bytes(model: nn.Module) -> int:
    """Bytes of NF4 storage (codes and scales) in ``model``'s QLoRA layers."""
    return sum(m.nf4().nbytes for m in model.modules() if isinstance(m, QLoRALinear))
