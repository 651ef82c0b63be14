"""The failure modes of the Q&A, each reproduced on the tiny debug Llama in well under a second (the others come
from the week's real runs: lr, file sizes, QLoRA's compute dtype, the bitsandbytes CPU trap).

Every function returns ``{"symptom": <what was measured>, "shown": <bool: the symptom appeared>, ...numbers}``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from shared.nn.lora import LoRAConfig, LoRAError, LoRALinear, inject_lora, lora_layers, unload_lora


def _tiny(seed: int = 0) -> nn.Module:
    from shared.models.tiny import tiny_llama

    return tiny_llama(64, hidden_size=32, num_layers=2, num_heads=2, seed=seed).eval()


def _ids() -> torch.Tensor:
    return torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(0))


def _adapted(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(base, base + LoRA with a nonzero B): a trained adapter's stand-in."""
    base = _tiny(seed)
    model = copy.deepcopy(base)
    inject_lora(model, LoRAConfig(r=4, alpha=8))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in lora_layers(model).values():
            m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.05)
    return base, model


def _max_diff(a: nn.Module, b: nn.Module) -> float:
    with torch.no_grad():
        return float((a(_ids()).logits - b(_ids()).logits).abs().max())


def wrong_targets() -> dict[str, Any]:
    """GPT-2's module names on a Llama: nothing would train. The hand injection refuses and lists the real names."""
    try:
        inject_lora(_tiny(), LoRAConfig(target_modules=["c_attn", "c_proj"]))
    except LoRAError as e:
        return {"symptom": str(e), "shown": "q_proj" in str(e)}
    return {"symptom": "no error: the wrong names were accepted", "shown": False}


def forgot_merge() -> dict[str, Any]:
    """Exporting the base weights without merging ships the base model: its logits equal the base's exactly."""
    base, model = _adapted()
    exported = copy.deepcopy(model)
    for n, m in list(lora_layers(exported).items()):  # the mistake: keep each layer's base, drop the adapter
        parent, _, child = n.rpartition(".")
        setattr(exported.get_submodule(parent), child, m.base)
    merged = unload_lora(copy.deepcopy(model))
    return {"symptom": "exported logits equal the base model's", "shown": _max_diff(exported, base) == 0.0,
            "adapter_effect": _max_diff(model, base), "unmerged_export_vs_base": _max_diff(exported, base),
            "merged_export_vs_adapted": _max_diff(merged, model)}


def merged_twice() -> dict[str, Any]:
    """Merging twice adds B A twice: the logits move by as much again. The hand layer refuses a second merge."""
    base, model = _adapted()
    twice = copy.deepcopy(model)
    with torch.no_grad():
        for m in lora_layers(twice).values():
            m.base.weight += 2 * m.delta_weight()  # what two merges do
            m.merged = True
    refused = False
    try:
        for m in lora_layers(copy.deepcopy(model)).values():
            m.merge()
            m.merge()
    except LoRAError:
        refused = True
    err = _max_diff(twice, model)
    return {"symptom": f"logits off by {err:.3g} after a double merge", "shown": err > 0 and refused,
            "double_merge_error": err, "adapter_effect": _max_diff(model, base), "second_merge_refused": refused}


def dtype_mismatch() -> dict[str, Any]:
    """A bf16 base with an fp32 adapter: the bare product raises; LoRALinear casts the adapter's input and output."""
    layer = LoRALinear(nn.Linear(16, 8).to(torch.bfloat16), r=2, alpha=4)
    x = torch.randn(3, 16, dtype=torch.bfloat16)
    try:
        _ = x @ layer.lora_A.T
        message = ""
    except RuntimeError as e:
        message = str(e).splitlines()[0]
    y = layer(x)
    return {"symptom": message or "no error", "shown": bool(message), "hand_output_dtype": str(y.dtype)}


def alpha_over_r(ranks: tuple[int, int] = (1, 64), alpha: float = 16.0, lr: float = 1e-3) -> dict[str, Any]:
    """Size of the first AdamW update ``‖(alpha / r) · B A‖_F`` at two ranks, with alpha fixed and with alpha = 2r.

    Adam's first step moves every entry of B by about lr, so ``‖B A‖`` grows like √r: with alpha fixed the update
    shrinks like 1/√r (a rank sweep at fixed alpha also changes the effective lr), with alpha ∝ r it grows like √r.
    rsLoRA's alpha / √r keeps it constant (Kalajdzievski 2023, https://arxiv.org/abs/2312.03732).
    """
    def update(r: int, a: float) -> float:
        torch.manual_seed(0)
        layer = LoRALinear(nn.Linear(64, 64), r=r, alpha=a)
        opt = torch.optim.AdamW([layer.lora_A, layer.lora_B], lr=lr, weight_decay=0.0)
        x = torch.randn(32, 64, generator=torch.Generator().manual_seed(1))
        layer(x).pow(2).mean().backward()
        opt.step()
        return float(layer.delta_weight().detach().norm())

    lo, hi = ranks
    fixed = update(hi, alpha) / update(lo, alpha)
    scaled = update(hi, 2.0 * hi) / update(lo, 2.0 * lo)
    return {"symptom": f"r={hi} vs r={lo}: update x{fixed:.3g} with alpha fixed, x{scaled:.3g} with alpha = 2r",
            "shown": fixed < 1 < scaled, "ratio_fixed_alpha": fixed, "ratio_alpha_2r": scaled, "ranks": list(ranks)}


def reproduce_all() -> dict[str, dict[str, Any]]:
    """Every tiny-model reproduction, by Q&A key."""
    return {"wrong_targets": wrong_targets(), "forgot_merge": forgot_merge(), "merged_twice": merged_twice(),
            "dtype_mismatch": dtype_mismatch(), "alpha_over_r": alpha_over_r()}
