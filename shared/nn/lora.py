"""LoRA written by hand: a frozen linear layer plus a trainable low-rank update, ``W x + (alpha / r) · B A x``.

Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", https://arxiv.org/abs/2106.09685. ``A`` (r, in)
is Kaiming-uniform initialised and ``B`` (out, r) is zero, so at step 0 the adapted model *is* the base model; only A
and B train. ``merge()`` folds ``(alpha / r) · B A`` into ``W`` (serving pays nothing for the adapter), ``unmerge()``
takes it out again. The initialisation, the scaling and the module names follow peft's ``LoraLayer``
(https://huggingface.co/docs/peft/package_reference/lora), so the tests compare this module with ``peft`` exactly.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

# the seven projections of a Llama block (SmolLM2's): attention q/k/v/o and the gated MLP
LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER_WEIGHTS, ADAPTER_CONFIG = "adapter.safetensors", "adapter_config.json"


class LoRAError(ValueError):
    """A LoRA request that cannot be carried out (bad rank, no matching module, merge state, wrong base model)."""


@dataclass
class LoRAConfig:
    """Where and how big the adapters are.

    ``target_modules``: module-name patterns; a pattern matches a linear layer whose qualified name equals it or ends
    with ``.<pattern>`` (peft's rule), or, written as ``re:<regex>``, whose name the regex matches in full.
    """

    r: int = 16
    alpha: float = 32.0  # the update is scaled by alpha / r
    dropout: float = 0.0  # on the adapter's input only
    target_modules: list[str] = field(default_factory=lambda: list(LLAMA_TARGETS))

    def validate(self) -> None:
        """Raises LoRAError for a rank ≤ 0, a negative alpha, a dropout outside [0, 1) or no target pattern."""
        if not isinstance(self.r, int) or self.r <= 0:
            raise LoRAError(f"lora.r={self.r!r}: the rank must be a positive integer (try 8 or 16)")
        if self.alpha <= 0:
            raise LoRAError(f"lora.alpha={self.alpha}: must be > 0 (the update is scaled by alpha / r)")
        if not 0 <= self.dropout < 1:
            raise LoRAError(f"lora.dropout={self.dropout}: must be in [0, 1)")
        if not self.target_modules:
            raise LoRAError("lora.target_modules is empty: name the linear layers to adapt, e.g. q_proj, v_proj")

    @property
    def scaling(self) -> float:
        return self.alpha / self.r


class LoRALinear(nn.Module):
    """``base(x) + (alpha / r) · dropout(x) Aᵀ Bᵀ`` around a frozen ``nn.Linear``.

    Shapes: x (..., in_features) -> (..., out_features); ``lora_A`` (r, in_features), ``lora_B`` (out_features, r).
    The adapter is kept in fp32 whatever the base weight's dtype, and its input is cast to the adapter's dtype and
    its output back to the base output's dtype, so a bf16 base with an fp32 adapter works (the dtype-mismatch
    pitfall: a bare ``x @ A.T`` with bf16 ``x`` and fp32 ``A`` raises).
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        if r <= 0:
            raise LoRAError(f"rank r={r}: must be a positive integer")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        dev = base.weight.device
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=dev))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, device=dev))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # peft's (and nn.Linear's) init
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.adapter_enabled = True  # False: the layer is its base (the DPO reference, see adapters_disabled)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:  # code that reads ``module.weight`` (dtype, device) keeps working
        return self.base.weight

    def delta_weight(self) -> torch.Tensor:
        """(out, in) the update ``(alpha / r) · B A`` the adapter adds to ``W``."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.merged or not self.adapter_enabled:
            return y
        h = self.dropout(x.to(self.lora_A.dtype)) @ self.lora_A.T  # (..., r)
        return y + (h @ self.lora_B.T * self.scaling).to(y.dtype)

    @torch.no_grad()
    def merge(self) -> None:
        """``W += (alpha / r) · B A``; the forward then skips the adapter. Raises LoRAError when already merged
        (merging twice adds the update twice)."""
        if self.merged:
            raise LoRAError("this LoRA layer is already merged: merging again would add B A twice (unmerge first)")
        self.base.weight += self.delta_weight().to(self.base.weight.dtype)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """``W -= (alpha / r) · B A`` (exact up to one fp32 rounding per weight). Raises LoRAError when not merged."""
        if not self.merged:
            raise LoRAError("this LoRA layer is not merged: nothing to unmerge")
        self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
        self.merged = False

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, r={self.r}, alpha={self.alpha}, merged={self.merged}"


def _matches(name: str, patterns: Sequence[str]) -> bool:
    for p in patterns:
        if p.startswith("re:"):
            if re.fullmatch(p[3:], name):
                return True
        elif name == p or name.endswith("." + p):
            return True
    return False


def linear_names(model: nn.Module) -> list[str]:
    """Qualified names of every ``nn.Linear`` in ``model`` (what a target pattern can match)."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def _short_names(names: Iterable[str]) -> str:
    short = sorted({n.rsplit(".", 1)[-1] for n in names})
    return ", ".join(short) if short else "(none)"


def inject_lora(model: nn.Module, cfg: LoRAConfig, layer: type[nn.Module] = LoRALinear, **layer_kwargs: Any) -> list[str]:
    """Replace every ``nn.Linear`` matching ``cfg.target_modules`` with ``layer(linear, r, alpha, dropout)`` and
    freeze every other parameter; returns the adapted module names.

    ``layer`` is :class:`LoRALinear` or a twin with the same constructor (``shared.nn.qlora.QLoRALinear``).

    Raises:
        LoRAError: a bad config (see :meth:`LoRAConfig.validate`), or no linear layer matches the patterns (the
            message lists the linear layers' names that exist), or the model already holds LoRA layers.
    """
    cfg.validate()
    if any(isinstance(m, LoRALinear | layer) for m in model.modules()):
        raise LoRAError("the model already has LoRA layers: inject once (or unload_lora first)")
    names = [n for n in linear_names(model) if _matches(n, cfg.target_modules)]
    if not names:
        raise LoRAError(f"lora.target_modules {list(cfg.target_modules)} match no linear layer of "
                        f"{type(model).__name__}; its linear layers are named: {_short_names(linear_names(model))}")
    for p in model.parameters():
        p.requires_grad_(False)
    for n in names:
        parent_name, _, child = n.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer(getattr(parent, child), cfg.r, cfg.alpha, cfg.dropout, **layer_kwargs))
    return names

def adapter_pairs(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(A, B) of every adapter in module order: the hand layers' ``lora_A``/``lora_B`` parameters or peft's
    ``lora_A["default"].weight`` / ``lora_B["default"].weight``."""
    out = []
    for m in model.modules():
        a, b = getattr(m, "lora_A", None), getattr(m, "lora_B", None)
        if isinstance(a, nn.Parameter):
            out.append((a, b))
        elif isinstance(a, nn.ModuleDict) and "default" in a:
            out.append((a["default"].weight, b["default"].weight))
    return out


@torch.no_grad()
def init_adapters(model: nn.Module, seed: int) -> int:
    """A ~ Kaiming-uniform(a=√5) from one generator seeded with ``seed``, in module order; B = 0. Returns the number
    of adapters. The same init as peft's ``reset_lora_parameters`` (https://github.com/huggingface/peft), drawn
    from one stream so the hand-written LoRA and peft's start from the same numbers (hand vs peft, hand DPO vs TRL)."""
    g = torch.Generator().manual_seed(seed)
    pairs = adapter_pairs(model)
    for a, b in pairs:
        bound = 1 / math.sqrt(a.shape[1])  # kaiming_uniform_(a=√5): gain √(2/6), bound = gain·√(3/fan_in)
        a.copy_(torch.empty(a.shape).uniform_(-bound, bound, generator=g))
        b.zero_()
    return len(pairs)


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    """name -> every layer with ``lora_A`` / ``lora_B`` (LoRA or QLoRA)."""
    return {n: m for n, m in model.named_modules() if hasattr(m, "lora_A") and hasattr(m, "lora_B")
            and isinstance(m.lora_A, nn.Parameter)}


@contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block every LoRA / QLoRA layer of ``model`` computes its base layer only, so ``model`` *is* the
    model the adapters were injected into: DPO's reference model at no memory cost (peft's ``disable_adapter``).

    Raises:
        LoRAError: ``model`` has no LoRA layer, or one is merged (its update is inside ``W``: unmerge first).
    """
    layers = lora_layers(model)
    if not layers:
        raise LoRAError("adapters_disabled: the model has no LoRA layer (inject_lora first, or use a separate "
                        "reference model)")
    merged = [n for n, m in layers.items() if getattr(m, "merged", False)]
    if merged:
        raise LoRAError(f"adapters_disabled: {len(merged)} layers are merged (e.g. {merged[0]}): their update is in "
                        "the weights; unmerge_lora(model) first")
    before = {n: m.adapter_enabled for n, m in layers.items()}
    try:
        for m in layers.values():
            m.adapter_enabled = False
        yield model
    finally:
        for n, m in layers.items():
            m.adapter_enabled = before[n]


def merge_lora(model: nn.Module) -> int:
    """Merge every LoRA layer (see :meth:`LoRALinear.merge`); returns how many. Raises LoRAError if one is merged."""
    layers = lora_layers(model)
    for m in layers.values():
        m.merge()
    return len(layers)


def unmerge_lora(model: nn.Module) -> int:
    """Unmerge every LoRA layer; returns how many."""
    layers = lora_layers(model)
    for m in layers.values():
        m.unmerge()
    return len(layers)


def unload_lora(model: nn.Module) -> nn.Module:
    """Merge the adapters and put plain ``nn.Linear`` layers back (the exportable model); returns ``model``."""
    for n, m in list(lora_layers(model).items()):
        if not isinstance(m, LoRALinear):
            raise LoRAError(f"{n} is a {type(m).__name__}: dequantise it first (only LoRALinear unloads)")
        if not m.merged:
            m.merge()
        parent_name, _, child = n.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, m.base)
    return model


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter tensors: ``{<layer>.lora_A, <layer>.lora_B}`` (detached, contiguous, CPU)."""
    out = {}
    for n, m in lora_layers(model).items():
        out[f"{n}.lora_A"] = m.lora_A.detach().cpu().contiguous()
        out[f"{n}.lora_B"] = m.lora_B.detach().cpu().contiguous()
    return out


def save_adapter(model: nn.Module, folder: str | Path, cfg: LoRAConfig, base: dict[str, str]) -> Path:
    """Write ``adapter.safetensors`` (A and B only) and ``adapter_config.json`` (the LoRA config and ``base``, the
    base model's identity, e.g. ``{"name": ..., "sha256": ...}``) into ``folder``; returns the weights file."""
    from safetensors.torch import save_file

    from shared.atomic import atomic_path, atomic_write_text

    folder = Path(folder)
    path = folder / ADAPTER_WEIGHTS
    with atomic_path(path) as tmp:
        save_file(adapter_state_dict(model), str(tmp), metadata={"format": "pt"})
    atomic_write_text(folder / ADAPTER_CONFIG, json.dumps({"lora": asdict(cfg), "base": base}, indent=2) + "\n")
    return path


def load_adapter(model: nn.Module, folder: str | Path, base: dict[str, str]) -> None:
    """Load an adapter written by :func:`save_adapter` into a model already injected with the same config.

    Raises:
        LoRAError: the adapter was trained on another base model (the message names both), or its tensors do not
            match the model's LoRA layers (names or shapes).
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = json.loads((folder / ADAPTER_CONFIG).read_text())
    if meta["base"].get("sha256") != base.get("sha256"):
        raise LoRAError(f"the adapter in {folder} was trained on base model {meta['base'].get('name')!r} "
                        f"(sha256 {str(meta['base'].get('sha256'))[:12]}), not on {base.get('name')!r} "
                        f"(sha256 {str(base.get('sha256'))[:12]}): load it onto the model it was trained on")
    tensors = load_file(str(folder / ADAPTER_WEIGHTS))
    own = adapter_state_dict(model)
    if set(tensors) != set(own) or any(tensors[k].shape != own[k].shape for k in own):
        missing, extra = sorted(set(own) - set(tensors))[:3], sorted(set(tensors) - set(own))[:3]
        raise LoRAError(f"the adapter in {folder} does not fit this model's LoRA layers (missing {missing}, "
                        f"unexpected {extra}, or other shapes): inject with the adapter's config {meta['lora']}")
    layers = lora_layers(model)
    with torch.no_grad():
        for k, t in tensors.items():
            name, _, which = k.rpartition(".")
            getattr(layers[name], which).copy_(t)
