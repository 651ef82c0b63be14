"""Greedy generation for evals: many prompts, batched with left padding, stopped at EOS or a token limit.

A Hugging Face model (:class:`shared.models.causal_lm.HFCausalLM`) decodes with ``transformers``' ``generate``
(its KV cache; https://huggingface.co/docs/transformers/main_classes/text_generation), ``do_sample=False``. The
project's GPT decodes with the loop below: every step re-runs the whole (short) sequence, positions counted from
each row's first real token so left padding changes nothing but the mask. Prompts are sorted by length before
batching (less padding) and the outputs put back in the caller's order, so the result is a pure function of the
model and the prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Generation:
    """One greedy continuation: its new token ids (EOS excluded) and whether it ended with EOS (not the limit)."""

    ids: tuple[int, ...]
    ended: bool


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, T)`` ids, right-aligned with ``pad_id`` before each prompt, and the ``(B, T)`` mask (1 on real tokens).

    Raises:
        ValueError: an empty prompt (a model needs at least one token to continue).
    """
    if any(len(p) == 0 for p in prompts):
        raise ValueError("an empty prompt cannot be continued: give every prompt at least one token (e.g. BOS)")
    t = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), t), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, t - len(p):] = torch.tensor(list(p), dtype=torch.long)
        mask[i, t - len(p):] = 1
    return ids, mask


def _cut(row: Sequence[int], eos_id: int) -> Generation:
    row = list(row)
    if eos_id in row:
        return Generation(tuple(row[:row.index(eos_id)]), True)
    return Generation(tuple(row), False)


@torch.no_grad()
def _gpt_greedy(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int, eos_id: int,
                pad_id: int) -> torch.Tensor:
    """(B, T) left-padded prompts -> (B, max_new_tokens) greedy tokens (``pad_id`` after a row's EOS)."""
    block = getattr(getattr(model, "cfg", None), "block_size", None)
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    new = []
    for _ in range(max_new_tokens):
        if block is not None and ids.shape[1] > block:  # keep the last block_size tokens (the model's window)
            ids, mask = ids[:, -block:], mask[:, -block:]
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(ids, attention_mask=mask, position_ids=pos)[:, -1]
        nxt = torch.where(done, torch.full_like(done, pad_id, dtype=torch.long), logits.argmax(-1))
        new.append(nxt)
        done |= nxt == eos_id
        ids = torch.cat([ids, nxt[:, None]], 1)
        mask = torch.cat([mask, (~done | (nxt == eos_id)).long()[:, None]], 1)
        if bool(done.all()):
            break
    return torch.stack(new, 1) if new else ids[:, :0]


def position_limit(hf_model: nn.Module) -> int | None:
    """The most positions a Hugging Face model can attend over (GPT-2's ``n_positions``, Llama's
    ``max_position_embeddings``), or None."""
    cfg = getattr(hf_model, "config", None)
    return getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)


def fit_window(ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int,
               limit: int | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Fit a left-padded batch and its continuation into ``limit`` positions: fewer new tokens when the prompt is
    long (the answer then stops at the window, which the harness scores as not ended); a prompt of ``limit`` or more
    tokens keeps its last ``limit - 1`` (a model with learned positions cannot go past its table)."""
    if limit is None or ids.shape[1] + max_new_tokens <= limit:
        return ids, mask, max_new_tokens
    if ids.shape[1] >= limit:
        ids, mask = ids[:, -(limit - 1):], mask[:, -(limit - 1):]
    return ids, mask, limit - ids.shape[1]


@torch.no_grad()
def greedy_generate(model: nn.Module, prompts: Sequence[Sequence[int]], *, eos_id: int, pad_id: int,
                    max_new_tokens: int, batch_size: int = 8) -> list[Generation]:
    """Greedy continuations of ``prompts`` (lists of ids), at most ``max_new_tokens`` new tokens each.

    Args:
        model: an :class:`~shared.models.causal_lm.HFCausalLM` (decoded by ``transformers``) or a model with
            ``forward(input_ids, attention_mask, position_ids) -> (B, T, V)`` (the project's GPT); in eval mode.
        eos_id: ends a continuation (not included in :attr:`Generation.ids`).
        pad_id: fills the left of shorter prompts (masked out).
        batch_size: prompts per forward pass.

    Returns:
        One :class:`Generation` per prompt, in the order given.
    """
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    out: dict[int, Generation] = {}
    hf = getattr(model, "hf", None)
    for s in range(0, len(order), batch_size):
        chunk = order[s:s + batch_size]
        ids, mask = left_pad([prompts[i] for i in chunk], pad_id)
        ids, mask = ids.to(device), mask.to(device)
        if hf is not None and hasattr(hf, "generate"):
            ids, mask, new = fit_window(ids, mask, max_new_tokens, position_limit(hf))
            gen = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, do_sample=False,
                              eos_token_id=eos_id, pad_token_id=pad_id)[:, ids.shape[1]:]
        else:
            gen = _gpt_greedy(model, ids, mask, max_new_tokens, eos_id, pad_id)
        for i, row in zip(chunk, gen.tolist(), strict=True):
            out[i] = _cut(row, eos_id)
    return [out[i] for i in range(len(prompts))]


def repeated_ngram_share(ids: Sequence[int], n: int = 3) -> float:
    """Share of a sequence's n-grams that already occurred earlier in it (0: no repetition; a model stuck in a loop
    approaches 1); 0.0 for a sequence shorter than n. The collapse signal of week 9's failure-mode detector."""
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


@dataclass
class GenerationProbe:
    """Prompts the periodic eval answers greedily, for the response-length and repetition signals (verbosity and
    collapse are visible in what the policy writes, not in the log-probs of fixed responses)."""

    prompts: list[list[int]]
    eos_id: int
    pad_id: int
    max_new_tokens: int = 48

    def measure(self, model: nn.Module) -> dict[str, float]:
        """``gen_length`` (mean new tokens), ``gen_repetition`` (mean repeated-trigram share), ``gen_ended`` (share
        that stopped at EOS)."""
        gens = greedy_generate(model, self.prompts, eos_id=self.eos_id, pad_id=self.pad_id,
                               max_new_tokens=self.max_new_tokens, batch_size=len(self.prompts))
        n = max(len(gens), 1)
        return {"gen_length": sum(len(g.ids) for g in gens) / n,
                "gen_repetition": sum(repeated_ngram_share(g.ids) for g in gens) / n,
                "gen_ended": sum(bool(g.ended) for g in gens) / n}
