"""Timed training steps: tokens/s, ms/step and peak memory of a model on a task, for benchmark tables."""

from __future__ import annotations

import time

import torch
from torch import nn

from shared.amp import grad_scaler
from shared.device import synchronize
from shared.profiling import peak_memory_gib, reset_peak_memory
from shared.tasks.base import Task
from shared.train.config import OptimConfig
from shared.train.optim import build_optimizer
from shared.train.step import train_step


def time_train_steps(model: nn.Module, task: Task, optim: OptimConfig, *, micro_batch: int, steps: int, warmup: int,
                     precision: str = "fp32", grad_clip: float = 0.0, compiled: bool = False) -> dict[str, float]:
    """Throughput of ``steps`` optimizer steps of ``model`` on ``task``'s micro-batches of ``micro_batch`` (after
    ``warmup`` untimed ones, which also absorb ``torch.compile``'s compilation), with ``optim``'s optimizer.

    Returns:
        ``{"ms_per_step", "tokens_per_sec", "peak_mem_gib"}`` (peak memory: see :func:`shared.profiling.peak_memory_gib`).
    """
    device = next(model.parameters()).device
    fwd = torch.compile(model) if compiled else model
    opt, scaler = build_optimizer(model, optim), grad_scaler(device, precision)
    reset_peak_memory(device)
    tokens = 0
    for i in range(warmup + steps):
        if i == warmup:
            synchronize(device)
            t0 = time.perf_counter()
        batch = {k: v.to(device) for k, v in task.batch(i, 0, 1, micro_batch).items()}
        tokens += task.num_tokens(batch) if i >= warmup else 0
        train_step(fwd, opt, [batch], task.loss, precision=precision, scaler=scaler, grad_clip=grad_clip)
    synchronize(device)
    dt = time.perf_counter() - t0
    return {"ms_per_step": 1e3 * dt / steps, "tokens_per_sec": tokens / dt, "peak_mem_gib": peak_memory_gib(device)}
