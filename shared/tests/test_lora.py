"""The hand-written LoRA against peft's: same outputs with the same A and B, exact merge, adapter-only training."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from shared.nn.lora import (
    LLAMA_TARGETS,
    LoRAConfig,
    LoRAError,
    LoRALinear,
    adapter_state_dict,
    inject_lora,
    load_adapter,
    lora_layers,
    merge_lora,
    save_adapter,
    unload_lora,
    unmerge_lora,
)


def tiny_llama(seed: int = 0) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=2)).eval()


def ids() -> torch.Tensor:
    return torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(1))


def randomise_b(model: nn.Module) -> None:
    """B = 0 at init makes every comparison trivial; give the adapters a real update."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for m in lora_layers(model).values():
            m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.1)


def test_step_zero_equals_base_and_only_adapters_train():
    base = tiny_llama()
    model = copy.deepcopy(base)
    names = inject_lora(model, LoRAConfig(r=4, alpha=8))
    assert len(names) == 2 * len(LLAMA_TARGETS)
    x = ids()
    with torch.no_grad():
        assert torch.equal(model(x).logits, base(x).logits)  # B = 0: bit-identical to the base model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable
    assert all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    assert len(trainable) == 2 * len(names)


def test_output_equals_peft_with_the_same_adapters():
    from peft import LoraConfig, get_peft_model

    ref = get_peft_model(tiny_llama(), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                  target_modules=list(LLAMA_TARGETS)))
    ours = tiny_llama()
    inject_lora(ours, LoRAConfig(r=4, alpha=8))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, m in lora_layers(ours).items():
            p = ref.base_model.model.get_submodule(name)
            p.lora_B["default"].weight.copy_(torch.randn(p.lora_B["default"].weight.shape, generator=g) * 0.1)
            m.lora_A.copy_(p.lora_A["default"].weight)
            m.lora_B.copy_(p.lora_B["default"].weight)
    x = ids()
    with torch.no_grad():
        a, b = ours(x).logits, ref(x).logits
    # fp32, the same matmuls in the same order: only the order of the adapter's scaling differs (peft scales the
    # B-output, so do we) -> 1e-6 absolute on logits of size ~1
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_init_matches_peft_distribution():
    """Kaiming-uniform(a=√5) bounds A by 1/√in, like peft's and nn.Linear's default init; B starts at zero."""
    layer = LoRALinear(nn.Linear(256, 8), r=16, alpha=32)
    bound = 1 / 256 ** 0.5
    assert layer.lora_A.abs().max() <= bound
    assert layer.lora_A.abs().max() > 0.9 * bound
    assert torch.count_nonzero(layer.lora_B) == 0


def test_merge_and_unmerge_and_unload():
    model = tiny_llama()
    inject_lora(model, LoRAConfig(r=4, alpha=8))
    randomise_b(model)
    x = ids()
    w0 = {n: m.base.weight.clone() for n, m in lora_layers(model).items()}
    with torch.no_grad():
        unmerged = model(x).logits
        merge_lora(model)
        merged = model(x).logits
        # one more fp32 rounding per weight (W + ΔW) then the same matmul: 1e-5 on logits ~1
        torch.testing.assert_close(merged, unmerged, rtol=0, atol=1e-5)
        with pytest.raises(LoRAError, match="already merged"):
            merge_lora(model)
        unmerge_lora(model)
        for n, m in lora_layers(model).items():
            # (W + ΔW) - ΔW: two roundings of size ulp(|W|) ≤ 2^-24 · |W|
            torch.testing.assert_close(m.base.weight, w0[n], rtol=0, atol=1e-6)
        unload_lora(model)
        assert not lora_layers(model)
        torch.testing.assert_close(model(x).logits, unmerged, rtol=0, atol=1e-5)


def test_base_weights_bit_identical_after_training():
    model = tiny_llama().train()
    inject_lora(model, LoRAConfig(r=4, alpha=8, dropout=0.1))
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x = ids()
    losses = []
    for _ in range(5):
        loss = model(x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if not p.requires_grad)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


def test_adapter_save_load_roundtrip(tmp_path):
    base = {"name": "tiny", "sha256": "abc"}
    model = tiny_llama()
    inject_lora(model, LoRAConfig(r=4, alpha=8))
    randomise_b(model)
    path = save_adapter(model, tmp_path / "a", LoRAConfig(r=4, alpha=8), base)
    full = sum(p.numel() * 4 for p in model.parameters())
    assert path.stat().st_size < full / 3  # only A and B went to the file
    other = tiny_llama()
    inject_lora(other, LoRAConfig(r=4, alpha=8))
    load_adapter(other, tmp_path / "a", base)
    x = ids()
    with torch.no_grad():
        assert torch.equal(other(x).logits, model(x).logits)
    assert set(adapter_state_dict(other)) == set(adapter_state_dict(model))
    with pytest.raises(LoRAError, match="'tiny'.*'smollm'"):
        load_adapter(other, tmp_path / "a", {"name": "smollm", "sha256": "def"})


def test_bad_inputs_are_named():
    model = tiny_llama()
    with pytest.raises(LoRAError, match="q_proj.*up_proj|match no linear layer.*q_proj"):
        inject_lora(model, LoRAConfig(target_modules=["attn.c_attn"]))
    with pytest.raises(LoRAError, match="rank"):
        inject_lora(model, LoRAConfig(r=0))
    inject_lora(model, LoRAConfig(r=2, target_modules=["re:.*layers\\.0\\.self_attn\\.q_proj"]))
    assert list(lora_layers(model)) == ["model.layers.0.self_attn.q_proj"]
    with pytest.raises(LoRAError, match="already has LoRA"):
        inject_lora(model, LoRAConfig(r=2))


def test_bf16_base_with_fp32_adapter():
    layer = LoRALinear(nn.Linear(16, 8).to(torch.bfloat16), r=2, alpha=4)
    nn.init.normal_(layer.lora_B)
    x = torch.randn(3, 16, dtype=torch.bfloat16)
    y = layer(x)
    assert y.dtype == torch.bfloat16
    assert layer.lora_A.dtype == torch.float32
    with pytest.raises(RuntimeError):  # the naive update the layer avoids
        _ = x @ layer.lora_A.T
