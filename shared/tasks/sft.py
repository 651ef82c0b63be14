"""Supervised fine-tuning: next-token loss on the response only, written by hand (TRL's ``SFTTrainer`` with
``completion_only_loss=True`` is its reference, in the tests and in week 7's log).

An example is ``prompt + response + EOS`` as ids; its labels are the ids with ``IGNORE_INDEX`` (-100) on every prompt
token (and, in a batch, on padding), so the loss is the mean negative log-likelihood of the response tokens (and
the EOS that ends it) given everything before them: Ouyang et al. 2022 (InstructGPT, https://arxiv.org/abs/2203.02155)
fine-tune on demonstrations this way; Raschka, *Build a Large Language Model (From Scratch)* ch. 7, masks the
prompt the same way. An example longer than ``max_length`` is dropped and counted, never truncated: cutting it
would teach the model a response that stops mid-sentence, or a prompt with no response at all.

Packing (several examples in one row) is off: with SDPA and a padding mask, packed examples would attend to each
other unless every row carried a block-diagonal mask, and on 2 CPU cores padding to the longest example of a
micro-batch of similar records wastes little (the batch's padding share is logged).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from shared.config import at_least
from shared.data.prompts import format_prompt
from shared.tasks.lm import IGNORE_INDEX, causal_lm_loss
from shared.tasks.order import EpochOrder


@dataclass
class SFTTaskConfig:
    """How records become training examples and how the periodic eval is taken."""

    template: str = "alpaca"  # prompt format: "alpaca" or "chat" (shared.data.prompts.TEMPLATES)
    max_length: int = at_least(2, 256)  # tokens of prompt + response + EOS; longer examples are dropped and counted
    eval_batch: int = at_least(1, 8)  # examples per eval forward pass
    train_eval_examples: int = at_least(0, 32)  # fixed training examples whose loss is tracked beside val (over-fitting)


@dataclass(frozen=True)
class SFTExample:
    """One encoded example: ``input_ids`` = prompt + response + EOS, ``labels`` = -100 on the prompt."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    id: str = ""

    @property
    def prompt_len(self) -> int:
        return sum(1 for y in self.labels if y == IGNORE_INDEX)

    @property
    def response_len(self) -> int:
        return len(self.labels) - self.prompt_len


@dataclass
class EncodedSet:
    """The examples that fit; the ids (with token counts) of those dropped for being longer than max_length, and of
    those dropped for an empty response (nothing to learn but EOS: a data problem, counted, not trained on)."""

    examples: list[SFTExample]
    dropped: list[tuple[str, int]] = field(default_factory=list)
    max_length: int = 0
    empty: list[str] = field(default_factory=list)

    @property
    def lengths(self) -> list[int]:
        return [len(e.input_ids) for e in self.examples]


def encode_example(prompt_ids: Sequence[int], response_ids: Sequence[int], eos_id: int, id: str = "") -> SFTExample:
    """``prompt + response + [eos]`` and its labels (-100 on the prompt).

    Raises:
        ValueError: an empty response (no token would carry loss but the EOS; the data has a problem to fix).
    """
    if not len(response_ids):
        raise ValueError(f"example {id or '?'} has an empty response: drop or fix the record before SFT")
    ids = (*prompt_ids, *response_ids, eos_id)
    return SFTExample(ids, (IGNORE_INDEX,) * len(prompt_ids) + (*response_ids, eos_id), id)


def encode_records(records: Sequence[Any], tokenizer: Any, template: str, max_length: int) -> EncodedSet:
    """Format (``template``) and encode records; those over ``max_length`` tokens, and those whose output encodes to
    no token, are dropped and listed.

    The prompt and the response are tokenised separately and concatenated, so the prompt/response boundary is a
    token boundary whatever the tokenizer would merge across it; EOS is appended as an id.

    Args:
        records: objects with ``instruction``, ``input``, ``output`` and ``id``
            (:class:`shared.data.instruct.InstructionRecord`).
        tokenizer: the project's tokenizer interface (``encode`` without special tokens, ``eos_id``); for
            ``chat``, one with a chat template.

    Raises:
        ValueError: the tokenizer has no EOS id.
        ConfigError / TokenizerError: see :func:`shared.data.prompts.format_prompt`.
    """
    if tokenizer.eos_id is None:
        raise ValueError("SFT appends EOS to every response, and this tokenizer has no eos_id: use one that has")
    prompts = [format_prompt(r.instruction, r.input, template, tokenizer) for r in records]
    prompt_ids = encode_texts(tokenizer, prompts)
    response_ids = encode_texts(tokenizer, [r.output for r in records])
    out = EncodedSet([], [], max_length)
    for r, p, y in zip(records, prompt_ids, response_ids, strict=True):
        if not y:
            out.empty.append(r.id)
            continue
        n = len(p) + len(y) + 1
        if n > max_length:
            out.dropped.append((r.id, n))
            continue
        out.examples.append(encode_example(p, y, tokenizer.eos_id, r.id))
    return out


def encode_texts(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Each text's ids (no special tokens), in one ``encode_batch`` call when the tokenizer has one (SFT, DPO)."""
    if hasattr(tokenizer, "encode_batch"):
        return [list(ids) for ids in tokenizer.encode_batch(texts)]
    return [tokenizer.encode(t) for t in texts]


def collate(examples: Sequence[SFTExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a micro-batch to its longest example.

    Returns:
        ``input_ids`` (B, T) int64 (``pad_id`` after each example), ``attention_mask`` (B, T) int64 (1 on real
        tokens), ``labels`` (B, T) int64 (-100 on prompt and padding).
    """
    t = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), t), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), t), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), t), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats/token) over the response tokens: position t predicts labels[t + 1].

    Args:
        logits: (B, T, V) from ``model(input_ids, attention_mask)``.
        labels: (B, T), -100 where no loss is taken (prompt, padding).

    Returns:
        A 0-dim tensor: the sum of the response tokens' losses over their count (the same reduction as Hugging
        Face's ``ForCausalLMLoss`` on one batch; NaN when no token carries a label).
    """
    return causal_lm_loss(logits[:, :-1], labels[:, 1:])


def sum_and_count(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
    """Summed response-token loss (nats) and the number of such tokens, for a token-weighted mean over batches."""
    y = labels[:, 1:]
    n = int((y != IGNORE_INDEX).sum())
    if n == 0:
        return 0.0, 0
    return float(sft_loss(logits, labels)) * n, n


class SFTTask:
    """Response-only next-token loss on encoded examples (a :class:`shared.tasks.base.Task`).

    Micro-batch ``index`` for ``rank`` takes its examples from :class:`shared.tasks.order.EpochOrder`: an endless
    stream that visits every example once per epoch in an order shuffled by ``seed + epoch``, a pure function of its
    arguments, so a resumed run sees exactly the batches it would have seen.

    Args:
        train, val: encoded examples (non-empty).
        pad_id: the padding id (its positions get attention mask 0 and label -100).
        seed: the shuffling.
        eval_batch: examples per eval forward pass.
        train_eval_examples: the first k training examples (in file order) whose loss the eval also reports.

    Raises:
        ValueError: an empty training or validation set.
    """

    def __init__(self, train: Sequence[SFTExample], val: Sequence[SFTExample], pad_id: int, seed: int,
                 eval_batch: int = 8, train_eval_examples: int = 32) -> None:
        if not train or not val:
            raise ValueError(f"SFT needs training and validation examples; got {len(train)} and {len(val)} (were all "
                             "dropped for max_length, or filtered out?)")
        self.train, self.val, self.pad_id, self.seed = list(train), list(val), pad_id, seed
        self.eval_batch = eval_batch
        self.train_eval = self.train[:train_eval_examples]
        self.stream = EpochOrder(len(self.train), seed)

    def example_indices(self, index: int, rank: int, world_size: int, size: int) -> list[int]:
        """Which training examples micro-batch ``index`` of ``rank`` holds (see the class docstring)."""
        return self.stream.indices(index, rank, world_size, size)

    def epoch_at(self, index: int, world_size: int, size: int) -> float:
        """Epochs of training data seen after micro-batch ``index`` (over every rank)."""
        return self.stream.epoch_at(index, world_size, size)

    def batch(self, index: int, rank: int, world_size: int, size: int) -> dict[str, torch.Tensor]:
        return collate([self.train[i] for i in self.example_indices(index, rank, world_size, size)], self.pad_id)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = model(batch["input_ids"], attention_mask=batch["attention_mask"])
        return sft_loss(logits, batch["labels"]), {}

    def num_tokens(self, batch: dict[str, torch.Tensor]) -> int:
        """Real (non-padding) tokens of the micro-batch (a sum of the mask: one device sync on a GPU)."""
        return int(batch["attention_mask"].sum())

    def mean_loss(self, model: nn.Module, examples: Sequence[SFTExample]) -> float:
        """Token-weighted mean response loss (nats/token) of ``examples``, in batches of ``eval_batch``."""
        total, count = 0.0, 0
        with torch.no_grad():
            device = next(model.parameters()).device
            for i in range(0, len(examples), self.eval_batch):
                b = {k: v.to(device) for k, v in collate(examples[i:i + self.eval_batch], self.pad_id).items()}
                s, n = sum_and_count(model(b["input_ids"], attention_mask=b["attention_mask"]), b["labels"])
                total, count = total + s, count + n
        return total / max(count, 1)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """``{"val_loss"}`` over every validation example and, when tracked, ``"train_loss"`` over the fixed
        training examples, both token-weighted means in nats/token."""
        out = {"val_loss": self.mean_loss(model, self.val)}
        if self.train_eval:
            out["train_loss"] = self.mean_loss(model, self.train_eval)
        return out


def sft_task_from_records(train: Sequence[Any], val: Sequence[Any], tokenizer: Any, sft: SFTTaskConfig,
                          seed: int) -> tuple[SFTTask, EncodedSet]:
    """Encode instruction records with ``sft.template`` (examples over ``sft.max_length`` dropped) and build the
    response-only task on them; padding is the tokenizer's pad id, else its EOS id.

    Returns:
        ``(task, encoded_train)``: the task and the training set's encoding (its ``dropped`` / ``empty`` counts).

    Raises:
        ValueError: every training or validation example was dropped (see :class:`SFTTask`).
    """
    enc_train = encode_records(train, tokenizer, sft.template, sft.max_length)
    enc_val = encode_records(val, tokenizer, sft.template, sft.max_length)
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id
    task = SFTTask(enc_train.examples, enc_val.examples, pad, seed, sft.eval_batch, sft.train_eval_examples)
    return task, enc_train
