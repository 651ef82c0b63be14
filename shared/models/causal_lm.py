"""The causal-LM interface: ``model(input_ids, attention_mask=None) -> logits (B, T, V)``.

Every objective (pre-training, SFT, DPO) and every eval takes a model through this one call, so the project's own
:class:`shared.models.gpt.GPT` and any Hugging Face causal LM are interchangeable. The GPT satisfies it directly;
a Hugging Face model returns a ``ModelOutput`` and gets the thin adapter :class:`HFCausalLM`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class CausalLM(Protocol):
    """``(B, T)`` ids (+ an optional ``(B, T)`` mask, 1 on real tokens) -> ``(B, T, V)`` next-token logits."""

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor: ...


class HFCausalLM(nn.Module):
    """A Hugging Face ``*ForCausalLM`` behind :class:`CausalLM`: ``forward`` returns the logits tensor.

    The wrapped model is ``self.hf`` (a submodule, so ``.parameters()``, ``.to()``, ``.train()`` and optimizers
    see its weights); ``generate`` and ``config`` pass through to it.
    """

    def __init__(self, hf_model: nn.Module) -> None:
        super().__init__()
        self.hf = hf_model

    @property
    def config(self) -> Any:
        return self.hf.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) ids -> (B, T, V) logits; no KV cache is kept between calls (``use_cache=False``)."""
        out = self.hf(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
        return out.logits

    def generate(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """``transformers``' ``generate`` of the wrapped model."""
        return self.hf.generate(*args, **kwargs)
