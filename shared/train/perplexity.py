"""Loss and perplexity of a language model on a whole token stream: the fixed, reproducible eval.

The stream is cut into consecutive non-overlapping windows of T + 1 tokens (the last partial one is
dropped), every target token's negative log-likelihood is *summed*, and the mean is taken once at the end,
so the result does not depend on the batch size. Perplexity ``exp(mean NLL)`` is the effective number of
equally likely choices per token: a uniform model over V tokens has perplexity exactly V.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shared.amp import autocast
from shared.data.sampling import check_stream_length


@torch.no_grad()
def stream_loss(model: nn.Module, data: torch.Tensor | np.ndarray, block_size: int, batch_size: int = 16,
                precision: str = "fp32", max_tokens: int = 0) -> dict[str, float]:
    """Mean next-token loss over every window of ``data``.

    Args:
        model: a causal LM (:class:`shared.models.causal_lm.CausalLM`): (B, T) ids -> logits (B, T, V).
        data: (N,) token stream (tensor, or NumPy array / memmap).
        max_tokens: evaluate only the first this-many tokens (0 = all).

    Returns:
        ``{"loss": nats/token, "perplexity": exp(loss), "tokens": predicted tokens}``.

    Raises:
        TooFewTokensError: the stream (its first ``max_tokens``) holds fewer than ``block_size + 1`` tokens.
        ValueError: ``batch_size`` < 1 or ``max_tokens`` < 0.
    """
    if batch_size < 1 or max_tokens < 0:
        raise ValueError(f"stream_loss needs batch_size >= 1 and max_tokens >= 0, got {batch_size} and {max_tokens}")
    n = min(len(data), max_tokens) if max_tokens else len(data)
    if max_tokens and max_tokens < len(data):
        check_stream_length(n, block_size, f"the eval stream cut at max_tokens={max_tokens:,}",
                            f"raise max_tokens to at least {block_size + 1:,}, or set it to 0 (every token)")
    check_stream_length(n, block_size, "the eval stream", "evaluate on a longer stream (the model's block_size is "
                        "fixed by its training)")
    n_blocks = (n - 1) // block_size
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    starts = np.arange(n_blocks) * block_size
    for i in range(0, n_blocks, batch_size):
        idx = starts[i:i + batch_size, None] + np.arange(block_size + 1)[None, :]  # (b, T+1)
        if isinstance(data, np.ndarray):
            chunk = torch.from_numpy(data[idx].astype(np.int64))
        else:
            chunk = data[torch.from_numpy(idx)].long()
        chunk = chunk.to(device)
        with autocast(device, precision):
            logits = model(chunk[:, :-1]).float()
        total += F.cross_entropy(logits.flatten(0, 1), chunk[:, 1:].flatten(), reduction="sum").item()
        count += chunk[:, 1:].numel()
    model.train(was_training)
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(loss), "tokens": count}


def unigram_loss(train: np.ndarray | torch.Tensor, val: np.ndarray | torch.Tensor, vocab_size: int) -> dict[str, float]:
    """The baseline a language model must beat: predict every token with its training frequency, ignoring
    context (add-one smoothed so unseen tokens get a finite loss).

    Returns:
        ``{"loss": nats/token on val, "perplexity": exp(loss)}``.
    """
    counts = np.bincount(np.asarray(train, dtype=np.int64), minlength=vocab_size).astype(np.float64) + 1.0
    log_p = np.log(counts / counts.sum())
    loss = float(-log_p[np.asarray(val, dtype=np.int64)].mean())
    return {"loss": loss, "perplexity": math.exp(loss)}


def bits_per_byte(loss: float, tokens: int, utf8_bytes: int) -> float:
    """Nats per token -> bits per byte of text: ``loss * tokens / (utf8_bytes * ln 2)``. Unlike perplexity it does
    not depend on the tokenizer, so models with different vocabularies (or a char model) compare on it."""
    return loss * tokens / (utf8_bytes * math.log(2))
