"""Cache = no cache: greedy decoding with the KV cache must give the same tokens as without it, and the same logits
to fp32 rounding (1e-5) at every step, for the project's GPT and for a ``transformers`` model.

- :func:`cache_equality`: the project's GPT through :func:`shared.models.decode.stream` (``use_cache`` True vs
  False) on a left-padded batch of prompts of different lengths (each row's padding masked, its positions its own).
- :func:`hf_cache_equality`: a ``transformers`` causal LM through ``generate(do_sample=False, use_cache=True/False,
  output_logits=True, return_dict_in_generate=True)``: the sequences and every step's raw logits (before any
  logits processor) compared.

Why 1e-5 in fp32: the cached step computes the same dot products over the same keys as the full forward, but as a
(1, T) row instead of inside a (T, T) matmul, so only the order of the floating-point sums differs (reduction
blocking): differences of ~1e-7 relative on logits of order 1-10, two orders of magnitude under 1e-5. A wrong
position, mask or cache slot moves logits by O(0.1-1). Absolute 1e-5 holds for small models (the project's GPTs,
tiny random Llamas: measured 3e-7 to 3e-6). A deep model with large logits sits above it: SmolLM2-135M (30 layers,
logits up to ~36) shows |Δ| ≈ 3-5e-5 between the two paths, and its fp32 no-cache logits are themselves 5.5e-5 from
an fp64 forward (the cached ones 4.2e-5), so there ``relative=True`` judges ``max|Δ| / max|logit|`` (measured ~1.5e-6)
against 1e-5.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from shared.models.decode import SamplingConfig, left_pad, stream

FP32_TOL = 1e-5


def _gap(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """max |a_i - b_i| over every step and every logit; inf when the step counts differ."""
    if len(a) != len(b) or not a:
        return float("inf") if len(a) != len(b) else 0.0
    return max((x.float() - y.float()).abs().max().item() for x, y in zip(a, b, strict=True))


def _scale(a: Sequence[torch.Tensor]) -> float:
    """max |logit| over every step (the scale a relative tolerance is taken against)."""
    return max((x.float().abs().max().item() for x in a), default=0.0)


def _judge(equal: bool, gap: float, scale: float, tol: float, relative: bool) -> dict[str, Any]:
    rel = gap / scale if scale > 0 else gap
    return {"tokens_equal": equal, "max_abs_diff": gap, "logit_scale": scale, "max_rel_diff": rel, "tol": tol,
            "tol_kind": "relative" if relative else "absolute",
            "ok": bool(equal and (rel if relative else gap) <= tol)}


def cache_equality(model: torch.nn.Module, prompts: Sequence[Sequence[int]] | torch.Tensor, new_tokens: int,
                   pad_id: int = 0, attention_mask: torch.Tensor | None = None, tol: float = FP32_TOL,
                   attn_backend: str | None = None, name: str = "gpt", relative: bool = False) -> dict[str, Any]:
    """Greedy-decode ``new_tokens`` with and without the KV cache and compare.

    Args:
        model: the project's GPT (:class:`shared.models.gpt.GPT`).
        prompts: token lists of different lengths (left-padded here with ``pad_id``), or an already padded (B, T)
            tensor with its ``attention_mask``.
        attn_backend: run with this attention backend (``manual``/``torch``), restoring the model's afterwards.
        relative: judge ``max_rel_diff`` (``max_abs_diff / logit_scale``) against ``tol`` instead of the absolute gap.

    Returns:
        a row: ``model, attn_backend, batch, prompt_lens, new_tokens, n_steps, tokens_equal, max_abs_diff,
        logit_scale, max_rel_diff, tol, tol_kind, ok`` (``ok``: tokens equal and the gap within ``tol``).
    """
    if isinstance(prompts, torch.Tensor):
        ids, mask = prompts, attention_mask if attention_mask is not None else torch.ones_like(prompts)
    else:
        ids, mask = left_pad(prompts, pad_id)
    dev = next(model.parameters()).device
    ids, mask = ids.to(dev), mask.to(dev)
    before = model.cfg.attn_backend
    if attn_backend is not None:
        model.set_attn_backend(attn_backend)
    try:
        cfg = SamplingConfig(max_new_tokens=new_tokens, temperature=0.0)
        logits_c: list[torch.Tensor] = []
        logits_n: list[torch.Tensor] = []
        with_cache = list(stream(model, ids, cfg, mask, use_cache=True, logits_out=logits_c))
        without = list(stream(model, ids, cfg, mask, use_cache=False, logits_out=logits_n))
        backend = model.cfg.attn_backend
    finally:
        model.set_attn_backend(before)
    equal = len(with_cache) == len(without) and all(torch.equal(a, b) for a, b in zip(with_cache, without, strict=True))
    return {"model": name, "attn_backend": backend, "batch": ids.shape[0],
            "prompt_lens": [int(n) for n in mask.sum(dim=1).tolist()], "new_tokens": new_tokens,
            "n_steps": len(logits_c), **_judge(equal, _gap(logits_c, logits_n), _scale(logits_n), tol, relative)}


@torch.no_grad()
def hf_cache_equality(hf_model: Any, input_ids: torch.Tensor, new_tokens: int,
                      attention_mask: torch.Tensor | None = None, tol: float = FP32_TOL,
                      name: str | None = None, relative: bool = False) -> dict[str, Any]:
    """``transformers``' greedy ``generate`` with ``use_cache=True`` vs ``False``: tokens and per-step logits.

    ``min_new_tokens=new_tokens`` keeps both runs going for exactly ``new_tokens`` steps (it masks the end-of-sequence
    logit inside ``generate``'s processors; the compared ``output_logits`` are the raw, unprocessed ones).

    Returns:
        a row as :func:`cache_equality`'s (``attn_backend``: the model's ``_attn_implementation``).
    """
    hf_model.eval()
    dev = next(hf_model.parameters()).device
    ids = input_ids.to(dev)
    mask = (attention_mask if attention_mask is not None else torch.ones_like(input_ids)).to(dev)
    gc = hf_model.generation_config
    pad = gc.pad_token_id if gc.pad_token_id is not None else gc.eos_token_id
    if isinstance(pad, list):
        pad = pad[0]
    outs = [hf_model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                              do_sample=False, use_cache=uc, output_logits=True, return_dict_in_generate=True,
                              pad_token_id=pad if pad is not None else 0)
            for uc in (True, False)]
    (a, b) = (o.sequences[:, ids.shape[1]:] for o in outs)
    equal = a.shape == b.shape and torch.equal(a, b)
    return {"model": name or hf_model.config.model_type,
            "attn_backend": getattr(hf_model.config, "_attn_implementation", ""), "batch": ids.shape[0],
            "prompt_lens": [int(n) for n in mask.sum(dim=1).tolist()], "new_tokens": new_tokens,
            "n_steps": len(outs[0].logits),
            **_judge(equal, _gap(outs[0].logits, outs[1].logits), _scale(outs[1].logits), tol, relative)}


def random_prompts(lengths: Sequence[int], vocab: int, seed: int = 0, low: int = 1) -> list[list[int]]:
    """Seeded random token lists of the given lengths (ids in [low, vocab))."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(low, vocab, (n,), generator=g).tolist() for n in lengths]
