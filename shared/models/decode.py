"""Decoding: the next-token sampler and the generation loop, with or without a KV cache.

:func:`sample_next` turns the last position's logits into the next token: a repetition penalty on tokens already in
the sequence (CTRL, Keskar et al. 2019, https://arxiv.org/abs/1909.05858: a positive logit is divided by the
penalty, a negative one multiplied), temperature, top-k, top-p (nucleus sampling, Holtzman et al. 2020,
https://arxiv.org/abs/1904.09751), then a draw from a seeded generator, or the argmax when ``temperature == 0``.
:func:`stream` yields the new tokens one step at a time: with ``use_cache`` the prompt is run once (prefill) and
every step feeds only the newest token through :class:`shared.nn.kv_cache.KVCache`; without it every step reruns
the whole sequence (the reference the cache must equal). A left-padded batch (``attention_mask`` 0 on the left)
gives each row its own positions, so a row decodes as it would alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from shared.config import at_least


@dataclass
class SamplingConfig:
    """How the next token is chosen."""

    max_new_tokens: int = at_least(0, 64)
    temperature: float = at_least(0, 0.0)  # 0 = greedy (argmax); < 1 sharpens, > 1 flattens
    top_k: int = at_least(0, 0)  # keep the k most likely tokens (0 = all)
    top_p: float = 1.0  # keep the smallest set whose probability reaches p (1 = all)
    repetition_penalty: float = 1.0  # > 1 discourages tokens already in the sequence (1 = off)
    stop_ids: list[int] = field(default_factory=list)  # a row ends after emitting one of these

    def validate(self) -> None:
        """Raises ValueError naming a value outside its range."""
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty}")


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """``logits`` (B, V) with each token of ``seen`` (B, T) penalised: positive logits / penalty, negative ones
    × penalty (both lower the token's probability for penalty > 1). ``seen`` must hold real tokens only (a pad id
    that is also a real token would be penalised): :func:`stream` puts a row's last token in its padding."""
    if penalty == 1.0:
        return logits
    picked = logits.gather(1, seen)
    return logits.scatter(1, seen, torch.where(picked > 0, picked / penalty, picked * penalty))


def sample_next(logits: torch.Tensor, cfg: SamplingConfig, seen: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """The next token of each row, (B,), from the last position's ``logits`` (B, V) (see the module docstring).

    Args:
        seen: (B, T) tokens of each sequence so far, for the repetition penalty.
        generator: the noise of the draw (seeded: the same samples at every call).
    """
    logits = logits.float()
    if seen is not None:
        logits = apply_repetition_penalty(logits, seen, cfg.repetition_penalty)
    if cfg.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / cfg.temperature
    if cfg.top_k:
        kth = torch.topk(logits, min(cfg.top_k, logits.shape[-1])).values[:, [-1]]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop = cum - torch.softmax(sorted_logits, dim=-1) >= cfg.top_p  # the mass before a token already reaches p
        logits = logits.scatter(1, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) position of each token counting real tokens only: left padding does not shift a row."""
    return (mask.long().cumsum(dim=-1) - 1).clamp_min(0)


@torch.no_grad()
def stream(model: torch.nn.Module, input_ids: torch.Tensor, cfg: SamplingConfig,
           attention_mask: torch.Tensor | None = None, use_cache: bool = True,
           generator: torch.Generator | None = None,
           logits_out: list[torch.Tensor] | None = None) -> Iterator[torch.Tensor]:
    """Yield each step's new tokens, (B,), for up to ``cfg.max_new_tokens`` steps; a row that emitted a stop id
    keeps yielding that id, and the stream ends when every row has stopped.

    Args:
        model: the project's GPT (``model(ids, attention_mask, position_ids, kv_cache)``; ``new_kv_cache``).
        input_ids: (B, T0) prompts, left-padded to one length when their lengths differ.
        attention_mask: (B, T0), 0 on the left padding (None: no padding).
        use_cache: prefill once and decode one token per step through a KV cache; False reruns the sequence.
        logits_out: when given, each step's last-position logits (B, V) are appended (for equality tests).

    Raises:
        ValueError: prompt + new tokens longer than model.block_size (a cache cannot slide), or a bad config.
    """
    cfg.validate()
    b, t0 = input_ids.shape
    total = t0 + cfg.max_new_tokens
    if total > model.cfg.block_size:
        raise ValueError(f"{t0} prompt tokens + {cfg.max_new_tokens} new ones = {total} > model.block_size="
                         f"{model.cfg.block_size}: shorten the prompt or max_new_tokens")
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(input_ids.device)
    ids, pos = input_ids, _positions(mask)
    stop = torch.tensor(cfg.stop_ids, device=ids.device, dtype=ids.dtype)
    done = torch.zeros(b, dtype=torch.bool, device=ids.device)
    was_training = model.training
    model.eval()
    cache = model.new_kv_cache(b, total) if use_cache else None
    feed, feed_pos = ids, pos
    try:
        for _ in range(cfg.max_new_tokens):
            if cache is None:
                logits = model(ids, mask, pos)[:, -1]
            else:
                logits = model(feed, mask, feed_pos, cache)[:, -1]
            if logits_out is not None:
                logits_out.append(logits.float())
            # padding stands in as the row's last token (real, and already seen): a pad id must not be penalised
            seen = torch.where(mask == 0, ids[:, -1:], ids) if cfg.repetition_penalty != 1.0 else None
            nxt = sample_next(logits, cfg, seen, generator)
            if len(cfg.stop_ids):
                nxt = torch.where(done, ids[:, -1], nxt)  # a finished row repeats its stop id
                done |= torch.isin(nxt, stop)
            yield nxt
            ids = torch.cat((ids, nxt[:, None]), dim=1)
            mask = torch.cat((mask, torch.ones_like(nxt[:, None])), dim=1)
            pos = torch.cat((pos, pos[:, -1:] + 1), dim=1)
            feed, feed_pos = nxt[:, None], pos[:, -1:]
            if bool(done.all()):
                break
    finally:
        model.train(was_training)


def generate(model: torch.nn.Module, input_ids: torch.Tensor, cfg: SamplingConfig,
             attention_mask: torch.Tensor | None = None, use_cache: bool = True,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """``input_ids`` (B, T0) followed by the generated tokens, (B, T0 + n) (see :func:`stream`)."""
    new = list(stream(model, input_ids, cfg, attention_mask, use_cache, generator))
    return torch.cat([input_ids, torch.stack(new, dim=1)], dim=1) if new else input_ids


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists of different lengths -> ``(input_ids, attention_mask)``, both (B, T_max), padded on the left so
    every row's last prompt token sits in the last column (where decoding continues)."""
    t = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (t - len(p)) + list(p) for p in prompts])
    mask = torch.tensor([[0] * (t - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask
