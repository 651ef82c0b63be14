"""Hand-written NF4 (shared.nn.nf4) against bitsandbytes' quantize_4bit / dequantize_4bit, byte for byte."""

from __future__ import annotations

import pytest
import torch

from shared.nn.nf4 import ABSMAX_BLOCK, DYNAMIC_MAP, NF4_LEVELS, NF4Tensor, dequantize_nf4, quantize_nf4

bnbF = pytest.importorskip("bitsandbytes.functional")

EPS32 = torch.finfo(torch.float32).eps  # 2^-23, the fp32 unit in the last place of 1.0


def weight(shape: tuple[int, ...], seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return (torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 0.05).to(dtype)


def bnb_quantize(w: torch.Tensor, block_size: int, double_quant: bool):
    return bnbF.quantize_4bit(w, blocksize=block_size, quant_type="nf4", compress_statistics=double_quant)


def test_levels_are_bitsandbytes_table_and_normal_quantiles():
    assert torch.equal(NF4_LEVELS, bnbF.get_4bit_type("nf4", device="cpu"))
    # rebuilt from N(0, 1) quantiles (bitsandbytes' create_normal_map, offset 0.9677083): 8 non-negative and 7
    # negative quantiles, a shared 0, divided by the largest; float64 here vs bnb's float32 build: ≤ 2 ulp at 1.0
    off = 0.9677083
    pos = torch.special.ndtri(torch.linspace(off, 0.5, 9, dtype=torch.float64)[:-1])
    neg = -torch.special.ndtri(torch.linspace(off, 0.5, 8, dtype=torch.float64)[:-1])
    levels = torch.cat([pos, torch.zeros(1, dtype=torch.float64), neg])
    levels = (levels / levels.max()).sort().values.float()
    torch.testing.assert_close(levels, NF4_LEVELS, rtol=0, atol=2 * EPS32)
    assert NF4_LEVELS[7] == 0
    assert (NF4_LEVELS > 0).sum() == 8
    assert (NF4_LEVELS < 0).sum() == 7


def test_dynamic_map_is_bitsandbytes_map():
    assert torch.equal(DYNAMIC_MAP, bnbF.create_dynamic_map(signed=True))


# (256, 128): rows a multiple of the block; (37, 19): odd numel 703, a partial last block, an odd last dim;
# (3, 5, 64): 3-d; bf16 input; block 128
CASES = [((256, 128), 64, torch.float32), ((37, 19), 64, torch.float32), ((3, 5, 64), 64, torch.float32),
         ((256, 128), 128, torch.float32), ((64, 96), 32, torch.bfloat16)]


@pytest.mark.parametrize(("shape", "block_size", "dtype"), CASES)
def test_codes_scales_and_dequantisation_equal_bitsandbytes(shape, block_size, dtype):
    w = weight(shape, dtype=dtype)
    q = quantize_nf4(w, block_size)
    codes, state = bnb_quantize(w, block_size, False)  # codes (ceil(n / 2), 1) uint8
    assert torch.equal(q.codes, codes.reshape(-1))
    assert torch.equal(q.absmax, state.absmax)
    # the same fp32 products level · absmax, then the same cast: exact
    assert torch.equal(dequantize_nf4(q), bnbF.dequantize_4bit(codes, state))
    assert dequantize_nf4(q).dtype == dtype
    assert dequantize_nf4(q, torch.float32).dtype == torch.float32
    assert q.nbytes == codes.numel() + state.absmax.numel() * 4


@pytest.mark.parametrize(("shape", "block_size", "dtype"), CASES)
def test_double_quant_equals_bitsandbytes_compress_statistics(shape, block_size, dtype):
    w = weight(shape, seed=1, dtype=dtype)
    q = quantize_nf4(w, block_size, double_quant=True)
    codes, state = bnb_quantize(w, block_size, True)
    assert torch.equal(q.codes, codes.reshape(-1))
    assert torch.equal(q.absmax_codes, state.absmax)  # uint8 indices into the dynamic map
    assert torch.equal(q.absmax_scale, state.state2.absmax)  # one fp32 per 256 absmax values
    assert torch.equal(q.absmax_offset, state.offset)
    assert torch.equal(q.block_absmax(), bnbF.dequantize_blockwise(state.absmax, state.state2) + state.offset)
    assert torch.equal(dequantize_nf4(q), bnbF.dequantize_4bit(codes, state))
    bnb_bytes = codes.numel() + state.absmax.numel() + state.state2.absmax.numel() * 4 + 4
    assert q.nbytes == bnb_bytes < quantize_nf4(w, block_size).nbytes


def test_blocks_that_straddle_rows_follow_bitsandbytes_reference():
    """(300, 96) with block 64: blocks cross row ends. Codes and absmax still equal bnb's; bnb 0.50.2's native CPU
    dequantize_4bit kernel (used for an even last dim) indexes blocks per row and is off by up to 0.10 here (4x the
    round-trip bound), so the reference is bnb's pure-torch implementation, the one its CUDA kernel agrees with."""
    ref = pytest.importorskip("bitsandbytes.backends.default.ops")._dequantize_4bit_compute
    w = weight((300, 96), seed=2)
    q = quantize_nf4(w, 64)
    codes, state = bnb_quantize(w, 64, False)
    assert torch.equal(q.codes, codes.reshape(-1))
    assert torch.equal(q.absmax, state.absmax)
    expected = ref(codes.reshape(-1), state.absmax, NF4_LEVELS, 64, (300, 96), torch.float32)
    assert torch.equal(dequantize_nf4(q), expected)


@pytest.mark.parametrize(("shape", "block_size"), [((256, 128), 64), ((37, 19), 64), ((64, 96), 256)])
def test_round_trip_error_is_within_half_the_widest_level_gap(shape, block_size):
    """w / absmax lies in [-1, 1]; the nearest level is at most half the gap of its interval away, so
    |w - deq(q(w))| ≤ absmax · max_gap / 2 (max_gap = 1 - 0.7230 = 0.277, the top interval). Slack: the scaled value
    is w · (1/absmax) (2 roundings) and the product level · absmax one more, each ≤ eps/2 relative: 2 eps · absmax."""
    w = weight(shape, seed=3)
    q = quantize_nf4(w, block_size)
    n = w.numel()
    pad = (-n) % block_size
    err = torch.nn.functional.pad((w - dequantize_nf4(q)).abs().reshape(-1), (0, pad)).reshape(-1, block_size)
    max_gap = (NF4_LEVELS[1:] - NF4_LEVELS[:-1]).max()
    bound = q.absmax[:, None] * (max_gap / 2 + 2 * EPS32)
    assert (err <= bound).all()
    assert err.max() > 0.5 * bound.max()  # not vacuous: the error reaches over half the bound
    # each block's absmax value itself is a level (±1) and comes back exactly
    blocks = torch.nn.functional.pad(w.reshape(-1), (0, pad)).reshape(-1, block_size)
    idx = blocks.abs().argmax(dim=1)
    assert torch.equal(err.gather(1, idx[:, None]), torch.zeros(len(idx), 1))


def test_double_quant_error_bound_and_storage():
    """8-bit absmax: a centred absmax a - mean, divided by its 256-block's scale s, is rounded to the nearest
    dynamic-map value, at most h = max(max_gap_map / 2, 1 + map[0]) away (the map's top gap is 0.0141 and its lowest
    value is -0.9930, not -1), so |Δabsmax| ≤ h · s (+ 2 fp32 roundings of absmax). A dequantised weight is
    level · absmax with |level| ≤ 1, so it moves by at most that much from the single-quantised one."""
    w = weight((512, 256), seed=4)  # 2048 blocks of 64 -> 8 blocks of 256 absmax values
    q, dq = quantize_nf4(w, 64), quantize_nf4(w, 64, double_quant=True)
    assert torch.equal(dq.codes, q.codes)
    h = max(float((DYNAMIC_MAP[1:] - DYNAMIC_MAP[:-1]).max()) / 2, 1 + float(DYNAMIC_MAP[0]))
    scale = dq.absmax_scale.repeat_interleave(ABSMAX_BLOCK)[: q.absmax.numel()]
    d_absmax = (dq.block_absmax() - q.absmax).abs()
    assert (d_absmax <= h * scale + 2 * EPS32 * q.absmax).all()
    diff = (dequantize_nf4(dq) - dequantize_nf4(q)).abs().reshape(-1, 64)
    assert (diff <= (d_absmax + 2 * EPS32 * q.absmax)[:, None]).all()
    # bytes: 4 bits per weight + 8 bits per 64 + 32 per 256·64 + the 4-byte offset, vs 4 + 32 bits per 64
    n, nb = w.numel(), w.numel() // 64
    assert dq.nbytes == n // 2 + nb + 4 * (nb // 256) + 4
    assert q.nbytes == n // 2 + 4 * nb
    assert dq.nbytes < q.nbytes < w.numel() * 4 / 7  # 4.13 and 4.5 bits per weight vs 32


def test_zero_block_and_dataclass_fields():
    w = torch.zeros(2, 64)
    w[1, 3] = -0.5
    q = quantize_nf4(w, 64)
    assert isinstance(q, NF4Tensor)
    assert q.shape == (2, 64)
    assert q.dtype == torch.float32
    assert not q.double_quant
    assert torch.equal(dequantize_nf4(q), w)  # 0 and ±absmax are levels: exact
    assert q.codes.dtype == torch.uint8
    assert q.codes.numel() == 64


@pytest.mark.parametrize("bad", [48, 8, 0, -64, 64.0])
def test_bad_block_size_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=rf"block_size={bad!r}: must be a power of two ≥ 16"):
        quantize_nf4(weight((4, 64)), bad)


@pytest.mark.parametrize("w", [torch.zeros(0), torch.ones(4, 64, dtype=torch.int32)])
def test_empty_or_integer_weight_is_a_clear_error(w):
    with pytest.raises(ValueError, match="pass a non-empty floating-point weight"):
        quantize_nf4(w)
