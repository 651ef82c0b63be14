"""The hand-written QLoRA layer (shared.nn.qlora) against the dequantised-weight reference, LoRALinear and
bitsandbytes' Linear4bit."""

from __future__ import annotations

import copy
import gc
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shared.nn.lora import LoRAConfig, LoRAError, LoRALinear, inject_lora, lora_layers
from shared.nn.nf4 import dequantize_nf4
from shared.nn.qlora import QLoRALinear, dequantized_for_inference, quantized_bytes

IN, OUT, R = 128, 64, 4
BF16_U = 2.0**-8  # bf16 unit roundoff is 2^-8 (8 significant bits); a bf16 rounding moves a value ≤ 2^-9 relative


def layer(seed: int = 0, compute_dtype: torch.dtype = torch.float32, double_quant: bool = True, bias: bool = True):
    """(QLoRALinear with a random non-zero B, the nn.Linear it was built from)."""
    torch.manual_seed(seed)
    lin = nn.Linear(IN, OUT, bias=bias)
    q = QLoRALinear(lin, r=R, alpha=8, double_quant=double_quant, compute_dtype=compute_dtype)
    with torch.no_grad():
        q.lora_B.normal_(std=0.1)
    return q, lin


def reference(q: QLoRALinear, x: torch.Tensor) -> torch.Tensor:
    """fp32 ``F.linear(x, dequant(W), b) + (alpha / r) · x Aᵀ Bᵀ`` from the stored codes, outside the module."""
    w = dequantize_nf4(q.nf4(), torch.float32)
    return F.linear(x, w, q.bias) + (x @ q.lora_A.T) @ q.lora_B.T * q.scaling


def test_forward_fp32_equals_dequantised_matmul_plus_lora():
    q, _ = layer()
    x = torch.randn(5, IN)
    # the same fp32 kernels on the same operands; 1e-6 covers a different summation order (|y| ≲ 2, eps 1.2e-7)
    torch.testing.assert_close(q(x), reference(q, x), rtol=1e-6, atol=1e-6)
    assert q(x).dtype == torch.float32
    assert q(x.double()).dtype == torch.float64


def test_at_init_output_is_the_dequantised_base_exactly():
    torch.manual_seed(0)
    lin = nn.Linear(IN, OUT)
    q = QLoRALinear(lin, r=R, alpha=8, compute_dtype=torch.float32)
    x = torch.randn(3, 7, IN)
    assert torch.equal(q(x), F.linear(x, q.dequantized_weight(), lin.bias))  # B = 0 adds exact zeros


@pytest.mark.parametrize("compute_dtype", [torch.float32, torch.bfloat16])
def test_dequantized_for_inference_is_bit_identical_and_scoped(compute_dtype):
    q, _ = layer(compute_dtype=compute_dtype)
    model = nn.Sequential(q, nn.ReLU())
    x = torch.randn(3, 7, IN)
    with torch.no_grad():
        want = model(x)
    with dequantized_for_inference(model):
        assert q._inference_weight is not None
        with torch.no_grad():
            assert torch.equal(model(x), want)  # the same decoded W in the same F.linear
        assert torch.equal(model(x).detach(), want)  # with gradients: the per-matmul NF4 path, same numbers
    assert q._inference_weight is None  # released after the block
    with pytest.raises(RuntimeError, match="boom"), dequantized_for_inference(model):
        raise RuntimeError("boom")
    assert q._inference_weight is None  # also after an error


def test_forward_bf16_compute_is_within_bf16_rounding():
    """bf16 compute rounds x and W (each ≤ 2^-9 relative, so each product ≤ ~2^-8), the matmul output, the LoRA
    branch and their sum (each ≤ 2^-9 of |y|): |Δy| ≤ 2^-8 · (|x| |W|ᵀ + |b|) + 2^-8 · |y| + 2^-8 · |lora|."""
    q, _ = layer(compute_dtype=torch.bfloat16)
    x = torch.randn(5, IN)
    y = q(x)
    assert y.dtype == torch.float32
    assert q.dequantized_weight().dtype == torch.bfloat16
    w = dequantize_nf4(q.nf4(), torch.float32)
    ref = reference(q, x)
    lora = ((x @ q.lora_A.T) @ q.lora_B.T * q.scaling).abs()
    bound = BF16_U * (x.abs() @ w.abs().T + q.bias.abs() + ref.abs() + lora) + 1e-6
    err = (y - ref).abs()
    assert (err <= bound).all()
    assert err.max() > 1e-4  # it really ran in bf16 (fp32 would be ~1e-7)


def test_init_and_scaling_are_lora_linears():
    torch.manual_seed(3)
    q = QLoRALinear(nn.Linear(IN, OUT), r=R, alpha=8, dropout=0.1)
    torch.manual_seed(3)
    ref = LoRALinear(nn.Linear(IN, OUT), r=R, alpha=8, dropout=0.1)
    assert torch.equal(q.lora_A, ref.lora_A)  # same RNG draws: quantising consumes none
    assert torch.equal(q.lora_B, torch.zeros(OUT, R))
    assert q.scaling == ref.scaling == 2.0
    assert q.lora_A.dtype == torch.float32
    assert (q.in_features, q.out_features, q.weight.shape, q.weight.dtype) == (IN, OUT, (OUT, IN), torch.bfloat16)
    assert isinstance(q.dropout, nn.Dropout)
    assert "double_quant=True" in repr(q)


def test_gradients_equal_lora_linear_on_the_dequantised_weight():
    q, lin = layer(seed=1)
    ref = LoRALinear(copy.deepcopy(lin), r=R, alpha=8)
    with torch.no_grad():
        ref.base.weight.copy_(q.dequantized_weight())
        ref.lora_A.copy_(q.lora_A)
        ref.lora_B.copy_(q.lora_B)
    x = torch.randn(6, IN, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y, y2 = q(x), ref(x2)
    torch.testing.assert_close(y, y2, rtol=1e-6, atol=1e-6)  # same fp32 operands, possibly another kernel order
    (y.square().sum()).backward()
    (y2.square().sum()).backward()
    # a gradient sums 6 rows of products ≲ 1; 1e-5 relative is ~100 fp32 ulps, far above reordering noise
    for a, b in ((q.lora_A.grad, ref.lora_A.grad), (q.lora_B.grad, ref.lora_B.grad), (x.grad, x2.grad)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert [n for n, p in q.named_parameters() if p.requires_grad] == ["lora_A", "lora_B"]
    assert q.bias.grad is None
    assert all(not b.requires_grad for b in q.buffers())


def test_input_gradient_is_grad_out_times_w():
    """The custom backward (W dequantised again) against autograd through the plain matmul, and gradcheck in fp64
    (``.double()`` casts the adapter and bias; the fp32 scales stay fp32, the codes uint8)."""
    q, _ = layer(seed=2, double_quant=False)
    w = dequantize_nf4(q.nf4(), torch.float32)
    x = torch.randn(4, IN, requires_grad=True)
    g = torch.randn(4, OUT)
    (gx,) = torch.autograd.grad(q(x), x, g)
    x2 = x.detach().clone().requires_grad_(True)
    (gx2,) = torch.autograd.grad(F.linear(x2, w, q.bias) + (x2 @ q.lora_A.T) @ q.lora_B.T * q.scaling, x2, g)
    torch.testing.assert_close(gx, gx2, rtol=1e-5, atol=1e-6)
    q64 = copy.deepcopy(q).double()
    q64.compute_dtype = torch.float64
    assert q64.absmax.dtype == torch.float32
    assert q64.lora_A.dtype == torch.float64
    assert torch.equal(q64.dequantized_weight(), w.double())
    assert torch.autograd.gradcheck(q64, (torch.randn(2, IN, dtype=torch.float64, requires_grad=True),))


def test_no_full_weight_is_saved_for_backward():
    q, _ = layer()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = q(torch.randn(5, IN, requires_grad=True))
    assert saved
    assert all(t.numel() != OUT * IN for t in saved)  # codes are OUT·IN/2 bytes, x is 5·IN
    saved_bytes = sum(t.numel() * t.element_size() for t in saved)
    assert saved_bytes < OUT * IN * 4 / 2  # codes + scales + x, A, h, B: under half of fp32 W's bytes
    y.sum().backward()
    assert q.lora_B.grad is not None


def test_base_weight_is_freed_and_stored_only_as_nf4_buffers():
    q, lin = layer(double_quant=True)
    ref = weakref.ref(lin.weight)
    del lin
    gc.collect()
    assert ref() is None  # nothing kept the fp weight alive
    sd = q.state_dict()
    assert set(sd) == {"codes", "absmax_codes", "absmax_scale", "absmax_offset", "bias", "lora_A", "lora_B"}
    assert sd["codes"].dtype == torch.uint8
    assert sd["codes"].numel() == OUT * IN // 2
    assert quantized_bytes(q) == q.nf4().nbytes == OUT * IN // 2 + OUT * IN // 64 + 4 + 4
    other, _ = layer(seed=9)  # a state_dict round trip reproduces the layer
    other.load_state_dict(sd)
    x = torch.randn(2, IN)
    assert torch.equal(other(x), q(x))
    q.to(torch.bfloat16)  # the fp32 scales are not rounded to bf16
    assert q.absmax_scale.dtype == torch.float32
    assert torch.equal(q.dequantized_weight(), other.dequantized_weight())


def test_bad_arguments_are_clear_errors():
    with pytest.raises(LoRAError, match="rank r=0"):
        QLoRALinear(nn.Linear(IN, OUT), r=0, alpha=8)
    with pytest.raises(ValueError, match="block_size=48"):
        QLoRALinear(nn.Linear(IN, OUT), r=2, alpha=4, block_size=48)


def test_inject_into_tiny_llama_trains_and_shrinks_storage():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2))
    plain = copy.deepcopy(model)
    targets = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] != "lm_head"}
    fp32_bytes = sum(m.weight.numel() * 4 for m in targets.values())
    before = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    names = inject_lora(model, LoRAConfig(r=2, alpha=4), layer=QLoRALinear, block_size=64, compute_dtype=torch.float32)
    assert sorted(names) == sorted(targets)
    assert len(names) == 14
    layers = lora_layers(model)
    ids = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(0))
    # at init the adapted model is the base model with dequantised weights
    with torch.no_grad():
        for n, m in layers.items():
            plain.get_submodule(n).weight.copy_(m.dequantized_weight())
        torch.testing.assert_close(model(ids).logits, plain(ids).logits, rtol=1e-5, atol=1e-5)
        for m in layers.values():
            m.lora_B.normal_(std=0.1)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        loss = model(ids, labels=ids).loss
    loss.backward()
    weights = [m.dequantized_weight() for m in layers.values()]
    for t in saved:  # no dequantised W (nor Wᵀ) is saved; lm_head's own (unquantised) weight legitimately is
        for w in weights:
            assert not (t.shape == w.shape and torch.equal(t, w))
            assert not (t.shape == w.T.shape and torch.equal(t, w.T))
    assert all(m.lora_A.grad.abs().sum() > 0 and m.lora_B.grad.abs().sum() > 0 for m in layers.values())
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {f"{n}.lora_{ab}" for n in names
                                                                         for ab in "AB"}
    # 4 bits + 8 bits per 64 + 32 per 256 blocks + a 4-byte offset per matrix: ~7.6x under fp32 here
    assert quantized_bytes(model) < fp32_bytes / 7
    after = sum(t.numel() * t.element_size() for n, t in [*model.named_parameters(), *model.named_buffers()]
                if "lora_" not in n)
    assert before - after == fp32_bytes - quantized_bytes(model)


def test_forward_and_lora_gradients_equal_bitsandbytes_linear4bit():
    bnb = pytest.importorskip("bitsandbytes")
    torch.manual_seed(0)
    lin = nn.Linear(IN, OUT)
    q = QLoRALinear(lin, r=R, alpha=8, double_quant=True, compute_dtype=torch.float32)
    try:  # Linear4bit quantises on .to(device); stays in train mode (an eval no-grad forward repacks on CPU)
        ref = bnb.nn.Linear4bit(IN, OUT, compute_dtype=torch.float32, quant_type="nf4", compress_statistics=True)
        ref.weight = bnb.nn.Params4bit(lin.weight.data.clone(), requires_grad=False, quant_type="nf4", blocksize=64,
                                       compress_statistics=True)
        with torch.no_grad():
            ref.bias.copy_(lin.bias)
        ref = ref.to("cpu")
        ref(torch.randn(1, IN))
    except Exception as e:  # noqa: BLE001 - any failure of bnb's CPU backend is a skip, with its reason
        pytest.skip(f"bitsandbytes Linear4bit does not run on CPU here: {type(e).__name__}: {e}")
    assert torch.equal(ref.weight.data.reshape(-1), q.codes)  # the same NF4 codes
    with torch.no_grad():
        q.lora_B.normal_(std=0.1)
    a, b = q.lora_A.detach().clone().requires_grad_(True), q.lora_B.detach().clone().requires_grad_(True)
    x = torch.randn(6, IN)
    y_ref = ref(x) + (x @ a.T) @ b.T * q.scaling
    y = q(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-6, atol=1e-6)  # same dequantised W, same fp32 kernels
    y.square().sum().backward()
    y_ref.square().sum().backward()
    torch.testing.assert_close(q.lora_A.grad, a.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(q.lora_B.grad, b.grad, rtol=1e-5, atol=1e-6)
