"""NF4 quantisation written by hand: 4-bit NormalFloat codes with one absmax per block, optionally double-quantised.

Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized LLMs", https://arxiv.org/abs/2305.14314 (§3 and
Appendix E), and bitsandbytes' ``functional.quantize_4bit`` / ``dequantize_4bit``
(https://huggingface.co/docs/bitsandbytes/main/en/reference/functional). The weight is cut into blocks of
``block_size`` consecutive values (row-major order); each block is divided by its absmax (so it lies in [-1, 1]) and
each value becomes the index of the nearest of the 16 levels; two 4-bit codes are packed per byte, the first in the
high nibble (bitsandbytes' order). A last, partial block gets the absmax of its own values (bitsandbytes' rule) and an
odd count is padded with the code of 0.0, so the packed bytes equal bitsandbytes' byte for byte.

Double quantisation (bitsandbytes' ``compress_statistics=True``, the paper's "DQ") stores the fp32 absmax values as
8-bit codes too: subtract their mean (``absmax_offset``), then quantise blockwise in blocks of 256 with one fp32
scale per block and bitsandbytes' signed dynamic 8-bit map (:data:`DYNAMIC_MAP`, Dettmers 2015,
https://arxiv.org/abs/1511.04561). This costs 8 bits + 32/256 bits per 64 weights instead of 32: 0.127 instead of
0.5 extra bits per weight. One difference: bitsandbytes keeps a copy of the 256-entry map (1 KiB) in every
QuantState; here it is a module constant and :attr:`NF4Tensor.nbytes` does not count it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch

# The 16 NF4 levels (bitsandbytes' functional.get_4bit_type("nf4"), the paper's Appendix E), bitsandbytes'
# create_normal_map(0.9677083): 8 quantiles Φ⁻¹(p) of N(0, 1) at p = linspace(0.9677, 0.5, 9)[:-1] (the positive
# half), 7 at -Φ⁻¹(linspace(0.9677, 0.5, 8)[:-1]) (the negative half), one exact 0, all divided by Φ⁻¹(0.9677) so they
# span [-1, 1]. Each code then covers ≈ equal probability mass of a normal weight. The asymmetry (8 positive, 7
# negative) buys an exact 0 with all 16 codes used (a symmetric set would have no 0 or only 15 codes).
NF4_LEVELS = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0])
ABSMAX_BLOCK = 256  # absmax values per 8-bit block under double quantisation (bitsandbytes and the paper)
_TINY = 1e-38  # bitsandbytes' clamp for an all-zero block's absmax


def _dynamic_map() -> torch.Tensor:
    """(256,) fp32 sorted: bitsandbytes' ``create_dynamic_map(signed=True)``. For exponent e = 0..6, 2^e evenly spaced
    fractions in (0.1, 1) times 10^(e-6), both signs, plus 0 and 1 (so +1 is exact, the most negative is -0.993)."""
    vals = [0.0, 1.0]
    for e in range(7):
        b = torch.linspace(0.1, 1, 2**e + 1, dtype=torch.float32)
        m = ((b[:-1] + b[1:]) / 2 * 10.0 ** (e - 6)).tolist()
        vals += m + [-v for v in m]
    return torch.tensor(sorted(vals), dtype=torch.float32)


DYNAMIC_MAP = _dynamic_map()


@cache
def _table(name: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(levels, midpoints between adjacent levels) on ``device``; nearest level = bucketize over the midpoints."""
    t = (NF4_LEVELS if name == "nf4" else DYNAMIC_MAP).to(device)
    return t, (t[:-1] + t[1:]) / 2


@dataclass
class NF4Tensor:
    """A weight stored as NF4.

    ``codes`` (ceil(numel / 2),) uint8, two 4-bit level indices per byte (high nibble first). Scales, per block of
    ``block_size`` values: ``absmax`` (n_blocks,) fp32; or, when ``double_quant``, ``absmax_codes`` (n_blocks,) uint8
    indices into :data:`DYNAMIC_MAP`, ``absmax_scale`` (ceil(n_blocks / 256),) fp32 and ``absmax_offset`` () fp32, with
    ``absmax ≈ DYNAMIC_MAP[absmax_codes] · absmax_scale[block // 256] + absmax_offset``. ``shape`` and ``dtype`` are
    the original weight's.
    """

    codes: torch.Tensor
    absmax: torch.Tensor | None
    shape: tuple[int, ...]
    dtype: torch.dtype
    block_size: int
    double_quant: bool = False
    absmax_codes: torch.Tensor | None = None
    absmax_scale: torch.Tensor | None = None
    absmax_offset: torch.Tensor | None = None

    def tensors(self) -> dict[str, torch.Tensor | None]:
        """The stored tensors by name (None where unused)."""
        return {"codes": self.codes, "absmax": self.absmax, "absmax_codes": self.absmax_codes,
                "absmax_scale": self.absmax_scale, "absmax_offset": self.absmax_offset}

    @property
    def nbytes(self) -> int:
        """Bytes actually stored (codes and scales; not the shared 1 KiB :data:`DYNAMIC_MAP`)."""
        return sum(t.numel() * t.element_size() for t in self.tensors().values() if t is not None)

    def block_absmax(self) -> torch.Tensor:
        """(n_blocks,) fp32 absmax per block (decoded from 8 bits when double-quantised)."""
        if not self.double_quant:
            return self.absmax.float()
        dmap, _ = _table("dynamic", self.absmax_codes.device)
        n = self.absmax_codes.numel()
        scale = self.absmax_scale.float().repeat_interleave(ABSMAX_BLOCK)[:n]
        return dmap[self.absmax_codes.long()] * scale + self.absmax_offset.float()


def check_block_size(block_size: int) -> None:
    """Raises ValueError unless ``block_size`` is an int power of two ≥ 16 (bitsandbytes allows 32..4096)."""
    if not isinstance(block_size, int) or block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"block_size={block_size!r}: must be a power of two ≥ 16 (QLoRA and bitsandbytes use 64)")


def _blockwise(flat: torch.Tensor, block: int, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """flat (n,) fp32 -> (nearest-level codes (n,) int64, absmax (ceil(n / block),) fp32); the last block may be
    partial (zero-padded, which leaves its absmax unchanged). Scaling multiplies by 1/absmax, as bitsandbytes does."""
    n = flat.numel()
    blocks = torch.nn.functional.pad(flat, (0, (-n) % block)).reshape(-1, block)  # (n_blocks, block)
    absmax = blocks.abs().amax(dim=1)  # (n_blocks,)
    scaled = torch.clamp(blocks * (1.0 / absmax.clamp(min=_TINY))[:, None], -1, 1)
    _, mids = _table(name, flat.device)
    return torch.bucketize(scaled, mids).reshape(-1)[:n + n % 2], absmax  # a tie goes to the lower level (bnb)


def quantize_nf4(w: torch.Tensor, block_size: int = 64, double_quant: bool = False) -> NF4Tensor:
    """Quantise ``w`` (any shape, fp32/bf16/fp16) to NF4 in blocks of ``block_size`` values (row-major).

    Raises:
        ValueError: a block size that is not a power of two ≥ 16, an empty or non-floating-point ``w``.
    """
    check_block_size(block_size)
    if not w.is_floating_point() or w.numel() == 0:
        raise ValueError(f"quantize_nf4: got a {w.dtype} tensor of shape {tuple(w.shape)}; pass a non-empty "
                         "floating-point weight")
    flat = w.detach().reshape(-1).float()
    codes, absmax = _blockwise(flat, block_size, "nf4")  # the pad value of an odd count is 0.0's code, 7
    packed = ((codes[0::2] << 4) | codes[1::2]).to(torch.uint8)  # (ceil(n / 2),)
    if not double_quant:
        return NF4Tensor(packed, absmax, tuple(w.shape), w.dtype, block_size)
    offset = absmax.mean()
    a_codes, a_scale = _blockwise(absmax - offset, ABSMAX_BLOCK, "dynamic")
    return NF4Tensor(packed, None, tuple(w.shape), w.dtype, block_size, True,
                     a_codes[:absmax.numel()].to(torch.uint8), a_scale, offset)


def dequantize_nf4(q: NF4Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``level[code] · absmax[block]`` computed in fp32, shape ``q.shape``, cast to ``dtype`` (default: the original
    dtype). The products are bitsandbytes' ``dequantize_4bit`` products, bit for bit."""
    levels, _ = _table("nf4", q.codes.device)
    n = 1
    for s in q.shape:
        n *= s
    nib = torch.stack([q.codes >> 4, q.codes & 0x0F], dim=1).reshape(-1)[:n].long()  # (n,)
    vals = torch.nn.functional.pad(levels[nib], (0, (-n) % q.block_size)).reshape(-1, q.block_size)
    out = (vals * q.block_absmax()[:, None]).reshape(-1)[:n]
    return out.reshape(q.shape).to(dtype or q.dtype)
