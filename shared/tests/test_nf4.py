"""Hand-written NF4 against bitsandbytes' quantize_4bit / dequantize_4bit, and the QLoRA layer against the
dequantised-weight reference."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shared.nn.lora import LoRAConfig, LoRALinear, inject_lora
from shared.nn.nf4 import NF4_LEVELS, dequantize_nf4, quantize_nf4
from shared.nn.qlora import QLoRALinear, quantized_bytes

bnb = pytest.importorskip("bitsandbytes")
F = pytest.importorskip("bitsandbytes.functional")


def weight(shape=(256, 128), seed=0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 0.05


def test_levels_are_bitsandbytes_table():
    assert torch.equal(NF4_LEVELS, F.get_4bit_type("nf4", device="cpu").float())


def test_codes_and_dequantisation_equal_bitsandbytes():
    w = weight()
    q = quantize_nf4(w, 64)
    codes, state = F.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=False)
    assert torch.equal(q.codes, codes.reshape(-1))
    assert torch.equal(q.absmax, state.absmax)
    assert torch.equal(dequantize_nf4(q), F.dequantize_4bit(codes, state))


def test_round_trip_error_bound_and_double_quant():
    w = weight((64, 96), seed=1)
    q = quantize_nf4(w, 64)
    err = (w - dequantize_nf4(q)).abs().reshape(-1, 64)
    gap = (NF4_LEVELS[1:] - NF4_LEVELS[:-1]).max()  # nearest level: at most half the widest gap, times absmax
    assert (err <= q.absmax[:, None] * gap / 2 + 1e-7).all()
    dq = quantize_nf4(w, 64, double_quant=True)
    assert dq.nbytes < q.nbytes
    # 8-bit absmax: each block's scale is off by at most half a step of its 256-block range (/127), which moves a
    # weight by at most |level| ≤ 1 times that
    step = dq.absmax_scale.max() / 2
    assert (dequantize_nf4(dq) - dequantize_nf4(q)).abs().max() <= step + 1e-7
    with pytest.raises(ValueError, match="blocks of 64"):
        quantize_nf4(torch.randn(10, 3), 64)
    with pytest.raises(ValueError, match="power of two"):
        quantize_nf4(w, 48)


def test_qlora_layer_matches_lora_on_the_dequantised_weight():
    torch.manual_seed(0)
    lin = nn.Linear(128, 64)
    q = QLoRALinear(lin, r=4, alpha=8, block_size=64, double_quant=False, compute_dtype=torch.float32)
    ref = LoRALinear(nn.Linear(128, 64), r=4, alpha=8)
    with torch.no_grad():
        ref.base.weight.copy_(q.dequantized_weight())
        ref.base.bias.copy_(lin.bias)
        nn.init.normal_(q.lora_B, std=0.1)
        ref.lora_A.copy_(q.lora_A)
        ref.lora_B.copy_(q.lora_B)
    x = torch.randn(5, 128, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y, y2 = q(x), ref(x2)
    torch.testing.assert_close(y, y2, rtol=0, atol=1e-6)  # the same fp32 products
    y.square().sum().backward()
    y2.square().sum().backward()
    for a, b in ((q.lora_A.grad, ref.lora_A.grad), (q.lora_B.grad, ref.lora_B.grad), (x.grad, x2.grad)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert [n for n, p in q.named_parameters() if p.requires_grad] == ["lora_A", "lora_B"]


def test_no_full_weight_saved_for_backward_and_storage_shrinks():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2))
    fp32 = sum(m.weight.numel() * 4 for n, m in model.named_modules() if isinstance(m, nn.Linear) and "lm_head" not in n)
    inject_lora(model, LoRAConfig(r=2, alpha=4), layer=QLoRALinear, compute_dtype=torch.float32)
    numels = set()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: numels.add(t.numel()) or t, lambda t: t):
        loss = model(torch.randint(0, 64, (1, 5)), labels=torch.randint(0, 64, (1, 5))).loss
    loss.backward()
    assert 64 * 128 not in numels  # no dequantised MLP weight (64x128) kept for backward
    assert quantized_bytes(model) < fp32 / 6  # 4 bits + scales vs 32 bits
    assert all(p.grad is not None for n, p in model.named_parameters() if "lora_" in n)


def test_bitsandbytes_linear4bit_forward_matches():
    torch.manual_seed(0)
    lin = nn.Linear(128, 64, bias=False)
    ref = bnb.nn.Linear4bit(128, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4")
    ref.weight = bnb.nn.Params4bit(lin.weight.data.clone(), requires_grad=False, quant_type="nf4", blocksize=64,
                                   compress_statistics=False)
    try:
        ref.weight = ref.weight._quantize("cpu")  # what .to(device) does on a GPU
        x = torch.randn(4, 128)
        y_ref = ref(x)
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"bitsandbytes Linear4bit does not run on this CPU: {e}")
    q = QLoRALinear(lin, r=2, alpha=4, double_quant=False, compute_dtype=torch.float32)
    torch.testing.assert_close(q(x), y_ref, rtol=1e-5, atol=1e-5)  # same codes; fp32 matmul order may differ
