"""The models a week-8 run trains, one builder per method, all behind :class:`shared.models.causal_lm.HFCausalLM`:

- ``full``: every weight trains (week 7's recipe);
- ``lora``: :class:`shared.nn.lora.LoRALinear` injected by hand;
- ``peft``: peft's ``LoraModel`` with the same rank, alpha and targets (the library reference);
- ``qlora``: :class:`shared.nn.qlora.QLoRALinear` (NF4 base weights written by hand, dequantised per matmul);
- ``bnb``: bitsandbytes NF4 (``BitsAndBytesConfig``) + peft, the library QLoRA (GPU; see the CPU trap in the README).

Every adapter variant re-initialises its A matrices from one seeded generator in module order, so the hand LoRA and
peft's start from the same A (and B = 0) and train step for step alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shared.nn.lora import LoRAConfig, init_adapters, inject_lora, unload_lora
from week08_lora.config import AdapterConfig, QuantConfig

ADAPTER_METHODS = ("lora", "peft", "qlora", "bnb")


class BackendUnavailableError(RuntimeError):
    """A library path cannot run on this device (the message names the hand-written fallback)."""


@dataclass
class VariantSpec:
    """What a run trains: the method, where it starts, its adapter and quantisation, its lr."""

    name: str
    method: str  # full | lora | peft | qlora | bnb
    start: str = "base"  # base | sft (week 7's export)
    r: int = 0  # 0 for full fine-tuning
    alpha: float = 0.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ()
    lr: float = 0.0
    block_size: int = 0  # NF4 (qlora, bnb)
    double_quant: bool = False
    compute_dtype: str = ""

    @property
    def lora(self) -> LoRAConfig:
        return LoRAConfig(self.r, self.alpha, self.dropout, list(self.target_modules))


def make_spec(name: str, method: str, adapter: AdapterConfig, quant: QuantConfig, full_lr: float,
              start: str = "base", **changes: Any) -> VariantSpec:
    """A :class:`VariantSpec` from the config sections (``changes``: r, alpha, lr, compute_dtype, ...)."""
    if method == "full":
        return VariantSpec(name, method, start, lr=changes.get("lr", full_lr))
    quantised = method in ("qlora", "bnb")
    spec = VariantSpec(name, method, start, adapter.r, float(adapter.alpha), adapter.dropout,
                       tuple(adapter.target_modules), adapter.lr, quant.block_size if quantised else 0,
                       quant.double_quant if quantised else False, quant.compute_dtype if quantised else "")
    for k, v in changes.items():
        setattr(spec, k, v)
    return spec


def _dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


def load_hf(folder: Path, device: torch.device, **kwargs: Any) -> nn.Module:
    """``AutoModelForCausalLM.from_pretrained(folder)`` in fp32, offline, on ``device``."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32, **kwargs)
    return model if "quantization_config" in kwargs else model.to(device)


def cpu_repacks_4bit() -> bool:
    """Whether bitsandbytes repacks 4-bit weights for CPU inference on this machine: it does after any no-grad
    eval-mode forward, but only where the CPU has AVX512-BF16 (``bitsandbytes.functional.has_avx512bf16``)."""
    try:
        from bitsandbytes.functional import has_avx512bf16
    except ImportError:  # pragma: no cover - the hf extra installs it
        return False
    return bool(has_avx512bf16())


def bnb_supported(device: torch.device) -> tuple[bool, str]:
    """Whether the week trains bitsandbytes' 4-bit path on ``device`` (CUDA only), and why not.

    On CPU, bitsandbytes 0.50.2's ``gemv_4bit`` has no autograd kernel: on a CPU with AVX512-BF16, any no-grad
    eval-mode forward (the loop's step-0 val eval, ``generate``) repacks the weights and later LoRA gradients are
    wrong while the loss looks normal. On a CPU without it the repack never happens, but the same config would then
    train correctly on one CPU and silently wrongly on another, so the week keeps bitsandbytes training on CUDA.
    """
    if device.type == "cuda":
        return True, ""
    trap = ("after any no-grad eval-mode forward (the loop's step-0 val eval, generate) bitsandbytes repacks the "
            "4-bit weights for CPU inference and later LoRA gradients are wrong while the loss looks normal")
    if cpu_repacks_4bit():
        where = f"on this CPU (AVX512-BF16) {trap}"
    else:
        where = (f"this CPU has no AVX512-BF16, so bitsandbytes never repacks here (the gradient check measures it), "
                 f"but on CPUs that have it {trap}; training bitsandbytes is kept to CUDA")
    return False, (f"bitsandbytes 0.50.2 on CPU has no autograd kernel for gemv_4bit: {where}; the hand-written QLoRA "
                   "(qlora) runs instead")


def build(spec: VariantSpec, folder: Path, device: torch.device, seed: int) -> nn.Module:
    """The model ``spec`` trains, starting from the Hugging Face folder ``folder``, as an ``HFCausalLM``.

    Raises:
        BackendUnavailableError: ``bnb`` on a device bitsandbytes' 4-bit training does not support.
        LoRAError: a bad adapter config (rank, targets; the message lists the module names).
    """
    from shared.models.causal_lm import HFCausalLM

    if spec.method == "bnb":
        ok, why = bnb_supported(device)
        if not ok:
            raise BackendUnavailableError(why)
        from peft import LoraConfig, get_peft_model
        from transformers import BitsAndBytesConfig

        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=spec.double_quant,
                               bnb_4bit_compute_dtype=_dtype(spec.compute_dtype))
        hf = load_hf(folder, device, quantization_config=q, device_map={"": device.index or 0})
        hf = get_peft_model(hf, LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                                           target_modules=list(spec.target_modules)))
    else:
        hf = load_hf(folder, device)
        if spec.method == "lora":
            inject_lora(hf, spec.lora)
        elif spec.method == "qlora":
            from shared.nn.qlora import QLoRALinear

            inject_lora(hf, spec.lora, layer=QLoRALinear, block_size=spec.block_size, double_quant=spec.double_quant,
                        compute_dtype=_dtype(spec.compute_dtype))
        elif spec.method == "peft":
            from peft import LoraConfig, get_peft_model

            hf = get_peft_model(hf, LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                                               target_modules=list(spec.target_modules)))
    if spec.method in ADAPTER_METHODS:
        init_adapters(hf, seed)
    return HFCausalLM(hf).to(device) if spec.method != "bnb" else HFCausalLM(hf)


def merged_hf(model: nn.Module, spec: VariantSpec) -> nn.Module:
    """The plain Hugging Face model with the adapters folded in (hand LoRA: :func:`unload_lora`; peft:
    ``merge_and_unload``; full fine-tuning: the model itself).

    Raises:
        ValueError: a quantised variant (its merge would be into NF4 weights: dequantise first).
    """
    hf = getattr(model, "hf", model)
    if spec.method == "full":
        return hf
    if spec.method == "lora":
        return unload_lora(hf)
    if spec.method == "peft":
        return hf.merge_and_unload()
    raise ValueError(f"variant {spec.name} ({spec.method}) has NF4 base weights: merging needs them dequantised "
                     "first; export a LoRA or full variant")
