"""Does bitsandbytes' QLoRA give the right adapter gradients here? Compared with the hand-written QLoRA on one batch.

Both models start from the same base weights, quantised to NF4 (block 64, no double quantisation, fp32 compute), with
the same A and B in every adapter. The adapter gradients of one backward pass are compared (cosine similarity over
all of them, and the norm of layer 0's) twice: on a freshly loaded bitsandbytes model, and again after one no-grad
eval-mode forward — the CPU trap: bitsandbytes then repacks its 4-bit weights for CPU inference and the backward
runs through ``gemv_4bit``, which has no autograd kernel.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from shared.data.instruct import InstructionRecord
from shared.data.tokenizer import load_tokenizer
from shared.nn.lora import adapter_pairs, init_adapters
from week08_lora.runs import Start, sft_task
from week08_lora.variants import VariantSpec, build, cpu_repacks_4bit


@torch.no_grad()
def set_adapters(model: nn.Module, seed: int) -> None:
    """A as :func:`init_adapters` draws it, and B ~ N(0, 0.02²) from the same stream (B = 0 would make every A
    gradient zero and the comparison half empty)."""
    init_adapters(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    for _, b in adapter_pairs(model):
        b.copy_(torch.randn(b.shape, generator=g) * 0.02)


def adapter_grads(model: nn.Module, batch: dict[str, torch.Tensor], loss_fn: Any) -> tuple[float, list[torch.Tensor]]:
    """(loss, [grad A, grad B per adapter in module order]) of one forward/backward in train mode."""
    model.train()
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model, batch)[0]
    loss.backward()
    grads = []
    for a, b in adapter_pairs(model):  # no gradient at all (the CPU trap can cut the graph) counts as zero
        grads += [torch.zeros(t.shape) if t.grad is None else t.grad.detach().float().cpu().clone() for t in (a, b)]
    return float(loss), grads


def cosine(x: Sequence[torch.Tensor], y: Sequence[torch.Tensor]) -> float:
    """Cosine similarity of two gradient lists flattened into one vector each (in fp64: millions of fp32 terms
    would round the result past 1)."""
    u, v = torch.cat([t.flatten().double() for t in x]), torch.cat([t.flatten().double() for t in y])
    return float(torch.dot(u, v) / (u.norm() * v.norm()).clamp_min(1e-30))


def gradient_check(start: Start, train: Sequence[InstructionRecord], sft: Any, spec: VariantSpec, examples: int = 2,
                   seed: int = 0) -> dict[str, Any]:
    """bitsandbytes vs hand QLoRA adapter gradients, before and after an eval-mode forward (CPU).

    Returns a dict: ``available`` (False with ``reason`` when bitsandbytes cannot load NF4 here), the losses, the
    cosine before/after, layer 0's gradient norm (hand, bnb before, bnb after), the max |Δ| of the two
    dequantised layer-0 q_proj weights, whether this CPU has AVX512-BF16 and whether the eval forward repacked the
    weights (``repacked_after_eval``: without the repack there is no trap to show).
    """
    try:
        import bitsandbytes as bnb
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    except ImportError as e:  # pragma: no cover - the hf extra installs it
        return {"available": False, "reason": f"bitsandbytes does not import: {e}"}
    from shared.models.causal_lm import HFCausalLM

    tok = load_tokenizer(start.folder)
    task = sft_task(tok, train[:64], train[:64], sft, seed)
    batch = task.batch(0, 0, 1, examples)
    cpu = torch.device("cpu")
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=False,
                           bnb_4bit_compute_dtype=torch.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            hf = AutoModelForCausalLM.from_pretrained(str(start.folder), local_files_only=True, dtype=torch.float32,
                                                      quantization_config=q, device_map={"": "cpu"})
        except Exception as e:  # noqa: BLE001 - the library's own reason is the answer recorded
            return {"available": False, "reason": f"bitsandbytes {bnb.__version__} cannot load NF4 on CPU: {e}"}
        peft_model = get_peft_model(hf, LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=0.0,
                                                   target_modules=list(spec.target_modules)))
        lib = HFCausalLM(peft_model)
        set_adapters(lib, seed)
        loss_lib, g_before = adapter_grads(lib, batch, task.loss)
        w_lib, w_codes = _layer0_q(peft_model), _layer0_codes_decoded(peft_model)
        lib.eval()
        after_error, repacked = "", False
        try:
            with torch.no_grad():
                lib(batch["input_ids"], attention_mask=batch["attention_mask"])  # what an eval loop or generate does
            repacked = _layer0_repacked(peft_model)
            loss_after, g_after = adapter_grads(lib, batch, task.loss)
        except RuntimeError as e:  # the CPU repack itself fails on layers narrower than a block (tiny models)
            after_error = f"{type(e).__name__}: {str(e).splitlines()[0]}"
            loss_after, g_after = math.nan, [torch.full_like(g, math.nan) for g in g_before]
    hand_spec = VariantSpec(**{**spec.__dict__, "method": "qlora", "block_size": 64, "double_quant": False, "compute_dtype": "float32"})
    hand = build(hand_spec, start.folder, cpu, seed)
    set_adapters(hand, seed)
    loss_hand, g_hand = adapter_grads(hand, batch, task.loss)
    w_hand = _layer0_q(hand)
    gemv = [str(w.message) for w in caught if "gemv_4bit" in str(w.message)]
    return {"available": True, "bnb_version": bnb.__version__, "examples": examples,
            "loss_hand": loss_hand, "loss_bnb": loss_lib, "loss_bnb_after_eval": loss_after,
            "cos_before": cosine(g_hand, g_before), "cos_after": cosine(g_hand, g_after),
            "layer0_norm_hand": float(torch.cat([g_hand[0].flatten(), g_hand[1].flatten()]).norm()),
            "layer0_norm_before": float(torch.cat([g_before[0].flatten(), g_before[1].flatten()]).norm()),
            "layer0_norm_after": float(torch.cat([g_after[0].flatten(), g_after[1].flatten()]).norm()),
            "weight_max_abs_diff": float((w_lib - w_hand).abs().max()) if w_lib is not None else math.nan,
            # bitsandbytes' CPU dequantise vs its own codes decoded by hand: nonzero means bnb's kernel is wrong for
            # this shape (blocks running across row ends), so its gradients cannot be the reference here
            "bnb_dequant_error": float((w_lib - w_codes).abs().max()) if w_codes is not None else math.nan,
            "cpu_avx512bf16": cpu_repacks_4bit(), "repacked_after_eval": repacked,
            "gemv_warning": gemv[0][:200] if gemv else "", "after_eval_error": after_error}


def _layer0_repacked(model: nn.Module) -> bool:
    """Whether bitsandbytes repacked layer 0's q_proj weight for CPU inference (its quant state says so)."""
    for name, m in model.named_modules():
        if name.endswith("layers.0.self_attn.q_proj"):
            qs = getattr(getattr(m, "base_layer", m).weight, "quant_state", None)
            return bool(getattr(qs, "packing_format_for_cpu", False))
    return False


def _layer0_q(model: nn.Module) -> torch.Tensor | None:
    """Layer 0's q_proj weight as the forward uses it (dequantised), fp32."""
    for name, m in model.named_modules():
        if name.endswith("layers.0.self_attn.q_proj"):
            if hasattr(m, "dequantized_weight"):
                return m.dequantized_weight().float()
            base = getattr(m, "base_layer", m)
            w = base.weight
            if hasattr(w, "quant_state"):
                import bitsandbytes.functional as F

                return F.dequantize_4bit(w.data, w.quant_state).float().reshape(base.out_features, base.in_features)
            return w.float()
    return None


def _layer0_codes_decoded(model: nn.Module) -> torch.Tensor | None:
    """bitsandbytes' layer-0 q_proj codes and absmax (no double quantisation) decoded by :mod:`shared.nn.nf4`."""
    from shared.nn.nf4 import NF4Tensor, dequantize_nf4

    for name, m in model.named_modules():
        if name.endswith("layers.0.self_attn.q_proj"):
            w = getattr(m, "base_layer", m).weight
            if not hasattr(w, "quant_state") or w.quant_state.nested:
                return None
            qs = w.quant_state
            return dequantize_nf4(NF4Tensor(w.data.reshape(-1), qs.absmax, tuple(qs.shape), torch.float32,
                                            qs.blocksize)).float()
    return None
