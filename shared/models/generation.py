"""Text samples from a causal LM: a prompt, seeded sampling, the documents it wrote.

One function for every week's sample in a log (the char model of week 4, the BPE models of week 5 on), so samples
are drawn the same way everywhere: ``[BOS] + prompt`` (BOS when the tokenizer has one), ``model.generate`` with a
generator seeded by ``seed`` (the same noise at every call, so only the model differs between two samples), and the
text cut into documents where the model wrote EOS or BOS.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from shared.config import at_least
from shared.data.tokenizer import Tokenizer


@dataclass
class SampleConfig:
    """A seeded sample written into a log."""

    prompt: str = ""  # generation starts from [BOS] + this text
    max_new_tokens: int = at_least(0, 200)  # tokens generated after the prompt
    temperature: float = at_least(0, 0.8)  # < 1 sharpens the distribution (0 = greedy)
    top_k: int = at_least(0, 50)  # sample among the k most likely tokens (0 = all)
    seed: int = 0  # the same noise at every sample, so only the model changes


def sample_text(model: torch.nn.Module, tok: Tokenizer, cfg: SampleConfig) -> str:
    """The prompt and ``cfg.max_new_tokens`` sampled tokens after it, as text; documents the model ended (EOS) or
    began (BOS) are separated by a blank line.

    Args:
        model: has ``generate(idx (B, T0), max_new_tokens, temperature, top_k, generator) -> (B, T0 + n)``
            (:meth:`shared.models.gpt.GPT.generate`).
    """
    device = next(model.parameters()).device
    specials = {i for i in (tok.bos_id, tok.eos_id) if i is not None}
    prefix = [tok.bos_id] if tok.bos_id is not None else []
    idx = torch.tensor([[*prefix, *tok.encode(cfg.prompt)]], dtype=torch.long, device=device)
    g = torch.Generator(device=device).manual_seed(cfg.seed)
    out = model.generate(idx, cfg.max_new_tokens, cfg.temperature, cfg.top_k or None, generator=g)[0, len(prefix):]
    docs, current = [], []
    for i in out.tolist():
        if i in specials:
            docs.append(current)
            current = []
        else:
            current.append(i)
    return "\n\n".join(tok.decode(d) for d in [*docs, current] if d)
