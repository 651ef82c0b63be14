"""One optimizer step over k micro-batches: gradient accumulation, DDP ``no_sync``, AMP, loss scaling.

Gradient accumulation: each micro-batch's mean loss is divided by k before ``backward``, so the
summed gradients equal those of one batch k times larger (for equal-sized micro-batches). Under
DDP every ``backward`` would all-reduce the gradients; inside ``model.no_sync()`` DDP only
accumulates them locally, so only the last micro-batch pays for communication
(https://docs.pytorch.org/docs/stable/generated/torch.nn.parallel.DistributedDataParallel.html#torch.nn.parallel.DistributedDataParallel.no_sync).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from shared.amp import autocast
from shared.profiling import StepTimer

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf (at optimizer step ``step``, when the caller knows it)."""

    def __init__(self, message: str, step: int | None = None) -> None:
        super().__init__(message)
        self.step = step


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: LossFn,
    *,
    precision: str = "fp32",
    scaler: torch.amp.GradScaler | None = None,
    timer: StepTimer | None = None,
    grad_clip: float = 0.0,
    stats: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Forward/backward each micro-batch, then one optimizer step; returns the mean loss (0-dim, detached).

    Args:
        model: maps ``x`` (B, ...) to logits (B, num_classes); may be wrapped in DDP.
        micro_batches: k pairs ``(x, y)`` already on the model's device, all of the same size B.
        precision: ``fp32``, ``bf16`` or ``fp16`` (see :mod:`shared.amp`).
        scaler: required for fp16 (``shared.amp.grad_scaler``); ignored when disabled or None.
        timer: optional; the forward, backward and optimizer phases are timed into it.
        grad_clip: clip the global gradient L2 norm to this value before the step (0 = off;
            Pascanu et al. 2013, https://arxiv.org/abs/1211.5063). With fp16 the gradients are unscaled first.
        stats: optional dict that receives ``grad_norm``, a 0-dim tensor (the norm before clipping; needs ``grad_clip``).

    Raises:
        NonFiniteLossError: a micro-batch loss is NaN/inf (checked before the optimizer step, so the
            weights are never updated with it).
    """
    if not micro_batches:
        raise ValueError("train_step needs at least one micro-batch")
    timer = timer or StepTimer(enabled=False)
    device = next(model.parameters()).device
    k = len(micro_batches)
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), device=device)
    for i, (x, y) in enumerate(micro_batches):
        # DDP: forward and backward of all but the last micro-batch inside no_sync (no all-reduce).
        sync = model.no_sync() if isinstance(model, DistributedDataParallel) and i < k - 1 else contextlib.nullcontext()
        with sync:
            with timer.phase("forward"), autocast(device, precision):
                loss = loss_fn(model(x), y)  # mean over the micro-batch
            with timer.phase("backward"):
                scaled = loss / k
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
        total += loss.detach().float()
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
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            if stats is not None:
                stats["grad_norm"] = norm.detach()  # a tensor: no device sync here
        if scaler is not None:
            scaler.step(optimizer)  # unscales; skips the step if any gradient is inf/NaN
            scaler.update()
        else:
            optimizer.step()
    return mean_loss
