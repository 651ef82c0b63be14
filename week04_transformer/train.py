"""Train the character-level GPT: text -> char tokenizer -> 90/10 split -> GPT -> the shared pre-training recipe,
with samples.

Samples are drawn at the first eval (the untrained model), at the eval nearest the middle of the run and at the
last one, from the same prompt and the same noise, so only the model differs between them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from shared.data.text import CharTokenizer, load_text, split_ids
from shared.models.generation import sample_text
from shared.train.pretrain import LMRun, pretrain
from week04_transformer.config import Week04Config, run_config

WEEK = "week04"


@dataclass
class CharData:
    """The tokenized text and its split."""

    tokenizer: CharTokenizer
    train: torch.Tensor  # (N_train,) int64 character ids
    val: torch.Tensor  # (N_val,)


def load_data(cfg: Week04Config) -> CharData:
    """Fetch and verify the text, build the char vocabulary from it, and split it 90/10 (``data.val_frac``)."""
    text = load_text(cfg.data.dataset)
    tok = CharTokenizer.from_text(text)
    ids = torch.tensor(tok.encode(text), dtype=torch.long)
    train, val = split_ids(ids, cfg.data.val_frac)
    return CharData(tok, train, val)


def sample_steps(max_steps: int, eval_every: int) -> list[int]:
    """The eval steps that get a sample: the first (0), the one nearest the middle, and the last."""
    evals = sorted({*range(0, max_steps, eval_every), max_steps})
    middle = min(evals, key=lambda s: abs(s - max_steps / 2))
    return sorted({0, middle, max_steps})


def train(cfg: Week04Config, profile: str, data: CharData, t_start: float | None = None) -> LMRun:
    """Build the GPT of ``cfg.model`` and train it (or resume the run of the same config) with ``cfg``'s
    optimizer, schedule and loop; samples go into the eval records at :func:`sample_steps`."""
    cfg.model.vocab_size = data.tokenizer.vocab_size
    points = set(sample_steps(cfg.loop.max_steps, cfg.loop.eval_every))

    def on_eval(step: int, model: torch.nn.Module, record: dict) -> None:
        if step in points:
            record["sample"] = sample_text(model, data.tokenizer, cfg.sample)

    return pretrain(WEEK, "char_gpt", profile, run_config(cfg), cfg.setup(), data.train, data.val,
                    tokenizer_sha256=data.tokenizer.sha256, on_eval=on_eval, t_start=t_start,
                    on_start=lambda run: data.tokenizer.save(run.dir / "tokenizer.json"))
