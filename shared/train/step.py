"""One optimizer step over k micro-batches: gradient accumulation, skipped gradient sync, AMP, loss scaling.

Gradient accumulation: each micro-batch's mean loss is divided by k before ``backward``, so the summed gradients
equal those of one batch k times larger (for equal-sized micro-batches). Under DDP every ``backward`` would
all-reduce the gradients; inside the strategy's ``no_sync`` (DDP's ``model.no_sync()``) they are only accumulated
locally, so only the last micro-batch pays for communication
(https://docs.pytorch.org/docs/stable/generated/torch.nn.parallel.DistributedDataParallel.html#torch.nn.parallel.DistributedDataParallel.no_sync).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from shared.amp import autocast
from shared.parallel import Parallel
from shared.profiling import StepTimer

# loss_fn(model, batch) -> loss, or (loss, metrics): the objective, given the (wrapped) model and one micro-batch
LossFn = Callable[[nn.Module, Any], "torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]"]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf (at optimizer step ``step``, when the caller knows it)."""

    def __init__(self, message: str, step: int | None = None) -> None:
        super().__init__(message)
        self.step = step


def xy_loss(criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> LossFn:
    """A :data:`LossFn` for ``(x, y)`` micro-batches: ``criterion(model(x), y)`` (e.g. ``F.cross_entropy``)."""

    def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return criterion(model(x), y)

    return loss_fn


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: Sequence[Any],
    loss_fn: LossFn,
    *,
    precision: str = "fp32",
    scaler: torch.amp.GradScaler | None = None,
    parallel: Parallel | None = None,
    timer: StepTimer | None = None,
    grad_clip: float = 0.0,
    stats: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Forward/backward each micro-batch, then one optimizer step.

    Args:
        model: the module to train through (possibly wrapped by ``parallel``).
        micro_batches: k micro-batches already on the model's device, all of the same size.
        loss_fn: ``loss_fn(model, batch)`` -> the micro-batch's mean loss, or ``(loss, metrics)``.
        precision: ``fp32``, ``bf16`` or ``fp16`` (see :mod:`shared.amp`).
        scaler: required for fp16 (``shared.amp.grad_scaler``); ignored when disabled or None.
        parallel: the strategy whose ``no_sync`` wraps all but the last micro-batch (None: one process).
        timer: optional; the forward, backward and optimizer phases are timed into it.
        grad_clip: clip the global gradient L2 norm to this value before the step (0 = off;
            Pascanu et al. 2013, https://arxiv.org/abs/1211.5063). With fp16 the gradients are unscaled first.
        stats: optional dict that receives ``grad_norm``, a 0-dim tensor (the norm before clipping; needs ``grad_clip``).

    Returns:
        The mean loss over the micro-batches (0-dim, detached, not synchronised) and the mean of each metric.

    Raises:
        NonFiniteLossError: a micro-batch loss is NaN/inf (checked before the optimizer step, so the
            weights are never updated with it).
    """
    if not micro_batches:
        raise ValueError("train_step needs at least one micro-batch")
    timer = timer or StepTimer(enabled=False)
    parallel = parallel or Parallel()
    device = next(model.parameters()).device
    k = len(micro_batches)
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), device=device)
    sums: dict[str, torch.Tensor] = {}
    for i, batch in enumerate(micro_batches):
        with parallel.no_sync(model) if i < k - 1 else contextlib.nullcontext():
            with timer.phase("forward"), autocast(device, precision):
                out = loss_fn(model, batch)
                loss, metrics = out if isinstance(out, tuple) else (out, {})
            with timer.phase("backward"):
                scaled = loss / k
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
        total += loss.detach().float()
        for name, v in metrics.items():
            sums[name] = sums.get(name, 0.0) + v.detach().float()
    mean_loss = total / k
    if not torch.isfinite(mean_loss):
        raise NonFiniteLossError(
            f"training loss is {mean_loss.item()} (lr {optimizer.param_groups[0]['lr']:.3g}, precision {precision}). "
            "Lower the learning rate, add warm-up or gradient clipping, use bf16 instead of fp16, or check the inputs for NaN."
        )
    with timer.phase("optimizer"):
        if grad_clip > 0:
            if scaler is not None and scaler.is_enabled():
                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)  # frozen ones have no grad
            if hasattr(norm, "full_tensor"):  # FSDP2: a replicated DTensor (the norm over every rank's shards)
                norm = norm.full_tensor()
            if stats is not None:
                stats["grad_norm"] = norm.detach()  # a tensor: no device sync here
        if scaler is not None:
            scaler.step(optimizer)  # unscales; skips the step if any gradient is inf/NaN
            scaler.update()
        else:
            optimizer.step()
    return mean_loss, {name: v / k for name, v in sums.items()}
