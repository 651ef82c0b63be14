"""Pre-training: next-token prediction on random windows of a packed token stream.

Each micro-batch is ``size`` random windows of ``block_size + 1`` tokens (:func:`shared.data.sampling.random_batch`,
a pure function of ``(seed, index, rank, world_size)``): ``input_ids`` is the first T tokens, ``targets`` the same
window shifted by one. The periodic eval estimates train and val loss on the same fixed batches every time (seeded
apart from every training batch), so evals are comparable along a run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shared.config import at_least
from shared.data.sampling import random_batch

EVAL_SEED_OFFSET = 1_000  # eval batches use seed + this (train) and seed + 2x this (val): never a training batch
IGNORE_INDEX = -100  # a target that carries no loss (padding, an SFT prompt)


@dataclass
class LMTaskConfig:
    """The periodic loss estimate of a pre-training run."""

    eval_iters: int = at_least(1, 20)  # batches per estimate (of micro_batch windows each), the same batches at every eval


def causal_lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats/token) of logits (B, T, V) against targets (B, T), over the targets that
    are not :data:`IGNORE_INDEX` (-100). The logits are cast to fp32 first (a bf16 log-softmax over a large vocabulary
    loses precision)."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)


@torch.no_grad()
def estimate_loss(model: nn.Module, data: torch.Tensor | np.ndarray, iters: int, batch_size: int, block_size: int,
                  seed: int) -> float:
    """Mean loss (nats/token) over ``iters`` random batches of ``data`` fixed by ``seed`` (the same batches every call)."""
    device = next(model.parameters()).device
    total = 0.0
    for i in range(iters):
        x, y = random_batch(data, batch_size, block_size, seed, i, device)
        total += causal_lm_loss(model(x), y).item()
    return total / iters


class LMTask:
    """Next-token prediction on a (N,) token stream (a :class:`shared.tasks.base.Task`).

    Args:
        train, val: token streams (int64 tensors or NumPy arrays / memmaps).
        block_size: T of every window.
        seed: the batch order (eval batches are seeded apart from it).
        eval_iters, eval_batch: the periodic estimate, ``eval_iters`` batches of ``eval_batch`` windows per split.
    """

    def __init__(self, train: torch.Tensor | np.ndarray, val: torch.Tensor | np.ndarray, block_size: int, seed: int,
                 eval_iters: int, eval_batch: int) -> None:
        self.train, self.val, self.block_size, self.seed = train, val, block_size, seed
        self.eval_iters, self.eval_batch = eval_iters, eval_batch

    def batch(self, index: int, rank: int, world_size: int, size: int) -> dict[str, torch.Tensor]:
        x, y = random_batch(self.train, size, self.block_size, self.seed, index, rank=rank, world_size=world_size)
        return {"input_ids": x, "targets": y}  # (B, T) each

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return causal_lm_loss(model(batch["input_ids"]), batch["targets"]), {}

    def num_tokens(self, batch: dict[str, torch.Tensor]) -> int:
        return batch["input_ids"].numel()

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """``{"train_loss", "val_loss"}`` in nats/token, each on ``eval_iters`` fixed batches."""
        s, t, b = self.seed, self.block_size, self.eval_batch
        return {"train_loss": estimate_loss(model, self.train, self.eval_iters, b, t, s + EVAL_SEED_OFFSET),
                "val_loss": estimate_loss(model, self.val, self.eval_iters, b, t, s + 2 * EVAL_SEED_OFFSET)}
