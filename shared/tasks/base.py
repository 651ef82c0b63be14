"""The task interface of the step loop."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class Task(Protocol):
    """What :func:`shared.train.loop.fit` needs from an objective.

    - ``batch(index, rank, world_size, size)``: micro-batch number ``index`` (the loop asks for
      ``step x grad_accum_steps + i``) of ``size`` examples for ``rank`` of ``world_size``, as CPU tensors (the loop
      moves them to the device). A pure function of its arguments: resuming needs no sampler state, and the ranks'
      micro-batches together are the one-process micro-batch of ``size x world_size`` examples.
    - ``loss(model, batch)``: ``(loss, metrics)``, the micro-batch's mean loss (0-dim, differentiable) and extra
      0-dim metric tensors (averaged over the step's micro-batches and logged). ``model`` is what the loop trains
      through (maybe DDP-wrapped or compiled); a frozen model the objective needs (a reference) belongs to the task.
    - ``evaluate(model)``: JSON-able metrics (floats) of the plain model, the same on every rank; the loop runs it
      in eval mode under the run's autocast, at step 0, every ``eval_every`` steps and at the end.
    - ``num_tokens(batch)``: tokens the micro-batch trains on (for tokens/s and MFU), from shapes (no device sync).
    """

    def batch(self, index: int, rank: int, world_size: int, size: int) -> dict[str, torch.Tensor]: ...

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...

    def evaluate(self, model: nn.Module) -> dict[str, float]: ...

    def num_tokens(self, batch: dict[str, torch.Tensor]) -> int: ...
