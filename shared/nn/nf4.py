"""NF4 quantisation written by hand: 4-bit NormalFloat codes with one absmax per block, optionally double-quantised.

Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized LLMs", https://arxiv.org/abs/2305.14314, and
bitsandbytes' ``quantize_4bit`` (https://huggingface.co/docs/bitsandbytes). The 16 levels are quantiles of N(0, 1)
scaled to [-1, 1], built asymmetrically (8 non-negative, 7 negative, plus 0) so that 0 is represented exactly.
A block of ``block_size`` weights is divided by its absmax and each value is replaced by the index of the nearest
level; two 4-bit codes are packed per byte, the first in the high nibble (bitsandbytes' order). Double quantisation
stores the fp32 absmax values as 8-bit codes too (per block of 256, after subtracting their mean); bitsandbytes uses
its dynamic 8-bit map there, this module a symmetric linear one, so the absmax values differ slightly (the error is
bounded by half an 8-bit step of each 256-block's range, see the tests).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# bitsandbytes' NF4 table (functional.get_4bit_type("nf4")), the QLoRA paper's Appendix E values
NF4_LEVELS = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0])
ABSMAX_BLOCK = 256  # absmax values per 8-bit block (double quantisation), as in bitsandbytes and the paper


@dataclass
class NF4Tensor:
    """A weight stored as NF4: ``codes`` (uint8, two codes per byte) and per-block scales (fp32 ``absmax``, or with
    double quantisation int8 ``absmax_codes`` + fp32 ``absmax_scale`` per 256 blocks + the fp32 ``absmax_offset``)."""

    codes: torch.Tensor
    absmax: torch.Tensor | None
    shape: tuple[int, ...]
    dtype: torch.dtype
    block_size: int
    absmax_codes: torch.Tensor | None = None
    absmax_scale: torch.Tensor | None = None
    absmax_offset: torch.Tensor | None = None

    @property
    def double_quant(self) -> bool:
        return self.absmax_codes is not None

    @property
    def nbytes(self) -> int:
        """Bytes of the stored tensors (codes and scales)."""
        parts = [self.codes, self.absmax, self.absmax_codes, self.absmax_scale, self.absmax_offset]
        return sum(t.numel() * t.element_size() for t in parts if t is not None)

    def block_absmax(self) -> torch.Tensor:
        """(n_blocks,) fp32 absmax per block (decoded when double-quantised)."""
        if not self.double_quant:
            return self.absmax
        n = self.absmax_codes.numel()
        scale = self.absmax_scale.repeat_interleave(ABSMAX_BLOCK)[:n]
        return self.absmax_codes.float() * scale + self.absmax_offset


def _check_block(block_size: int) -> None:
    if block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"block_size={block_size}: must be a power of two ≥ 16 (QLoRA uses 64)")


def quantize_nf4(w: torch.Tensor, block_size: int = 64, double_quant: bool = False) -> NF4Tensor:
    """Quantise ``w`` (any shape, numel divisible by ``block_size``) to NF4.

    Raises:
        ValueError: a bad block size, or ``w.numel()`` not a multiple of it (the message names both).
    """
    _check_block(block_size)
    if w.numel() % block_size:
        raise ValueError(f"a weight of shape {tuple(w.shape)} ({w.numel()} values) does not split into blocks of "
                         f"{block_size}: pick a block size that divides it")
    flat = w.detach().float().reshape(-1, block_size)  # (n_blocks, block)
    absmax = flat.abs().amax(dim=1)  # (n_blocks,)
    scaled = flat / absmax.clamp_min(torch.finfo(torch.float32).tiny)[:, None]
    levels = NF4_LEVELS.to(w.device)
    mids = (levels[1:] + levels[:-1]) / 2  # nearest level = how many midpoints lie below
    codes = torch.bucketize(scaled, mids, right=True).to(torch.uint8).reshape(-1)
    packed = (codes[0::2] << 4) | codes[1::2]
    q = NF4Tensor(packed, absmax, tuple(w.shape), w.dtype, block_size)
    if double_quant:
        offset = absmax.mean()
        centred = absmax - offset
        pad = (-centred.numel()) % ABSMAX_BLOCK
        blocks = torch.nn.functional.pad(centred, (0, pad)).reshape(-1, ABSMAX_BLOCK)
        scale = blocks.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny) / 127
        a_codes = torch.round(blocks / scale[:, None]).clamp(-127, 127).to(torch.int8).reshape(-1)[:centred.numel()]
        q = NF4Tensor(packed, None, tuple(w.shape), w.dtype, block_size, a_codes, scale, offset)
    return q


def dequantize_nf4(q: NF4Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The weight back from its NF4 codes: ``level[code] · absmax[block]``, shape ``q.shape``, in ``dtype``
    (default: the original dtype)."""
    codes = torch.stack([q.codes >> 4, q.codes & 0x0F], dim=1).reshape(-1).long()
    vals = NF4_LEVELS.to(q.codes.device)[codes].reshape(-1, q.block_size) * q.block_absmax()[:, None]
    return vals.reshape(q.shape).to(dtype or q.dtype)
