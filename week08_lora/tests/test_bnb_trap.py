"""The bitsandbytes CPU trap: after one no-grad eval-mode forward, the LoRA gradients of a 4-bit model change while
the loss does not (bitsandbytes repacks the weights for CPU inference; gemv_4bit has no autograd kernel).

bitsandbytes repacks only on a CPU with AVX512-BF16, so the test asserts what this machine must do: the trap where
the CPU has it, and unchanged weights and gradients where it does not."""

from __future__ import annotations

import pytest
import torch

from week08_lora.bnb_check import _layer0_repacked, cosine
from week08_lora.variants import cpu_repacks_4bit

pytest.importorskip("bitsandbytes")


def test_eval_forward_and_cpu_gradients(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=128, intermediate_size=256, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(tmp_path)
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path), quantization_config=q, device_map={"": "cpu"})
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    ids = torch.randint(0, 128, (1, 8), generator=g)

    def grads():
        model.train()
        model.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        # after the repack some adapters get no gradient at all (None): count it as zero
        return float(loss), [torch.zeros_like(p) if p.grad is None else p.grad.clone()
                             for n, p in model.named_parameters() if "lora_" in n]

    loss0, g0 = grads()
    model.eval()
    with torch.no_grad():
        model(input_ids=ids[:, :1])  # one token: the shape generate() decodes with
    repacked = _layer0_repacked(model)
    loss1, g1 = grads()
    assert abs(loss1 - loss0) < 1e-3 * abs(loss0)  # the loss looks normal either way
    assert repacked == cpu_repacks_4bit()  # the repack happens exactly where the CPU has AVX512-BF16
    if repacked:
        assert cosine(g0, g1) < 0.99, cosine(g0, g1)  # the trap: the gradients are wrong
    else:  # no repack: the same kernels run and the gradients are the same to fp32 rounding
        assert cosine(g0, g1) > 1 - 1e-6, cosine(g0, g1)
