"""Optimizers built from param groups, and the learning-rate schedule.

The optimizer is built outside the loop, from a *param-groups rule* applied to whatever is trainable: a LoRA
model (only adapter weights trainable) or a policy beside a frozen reference model needs no special case, since
frozen parameters (``requires_grad=False``) are never handed to the optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from shared.train.config import OptimConfig, ScheduleConfig, TrainConfig

PARAM_GROUP_RULES = ("decay_matrices", "all")
SCHEDULES = ("cosine", "constant", "linear")


def param_groups(model: nn.Module, rule: str, weight_decay: float) -> list[dict[str, Any]]:
    """The trainable parameters of ``model`` in optimizer groups.

    - ``decay_matrices``: weight decay on matrices (dim >= 2) except embeddings; none on norms, biases and
      embeddings (decaying a gain or an embedding row pulls it towards 0 for no benefit; nanoGPT's rule).
    - ``all``: one group, weight decay on everything (the classifier weeks).

    A tied weight appears once (``.parameters()`` yields a shared parameter once), under its embedding.

    Raises:
        ValueError: unknown rule, or no trainable parameter.
    """
    if rule not in PARAM_GROUP_RULES:
        raise ValueError(f"unknown optim.param_groups '{rule}'. Known: {', '.join(PARAM_GROUP_RULES)}")
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameter (every requires_grad is False)")
    if rule == "all":
        return [{"params": trainable, "weight_decay": weight_decay}]
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay = [p for p in trainable if p.dim() >= 2 and id(p) not in embeddings]
    no_decay = [p for p in trainable if not (p.dim() >= 2 and id(p) not in embeddings)]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(groups: nn.Module | Iterable[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW (Loshchilov & Hutter 2019, https://arxiv.org/abs/1711.05101) or SGD with momentum over ``groups``:
    a model (grouped by ``cfg.param_groups``) or groups already made (e.g. by :func:`param_groups`).

    Raises:
        ValueError: unknown optimizer name or param-group rule.
    """
    if isinstance(groups, nn.Module):
        groups = param_groups(groups, cfg.param_groups, cfg.weight_decay)
    groups = list(groups)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    if cfg.name != "adamw":
        raise ValueError(f"unknown optim.name '{cfg.name}'. Known: adamw, sgd")
    on_cuda = groups[0]["params"][0].device.type == "cuda"
    fused = {"fused": True} if cfg.fused and on_cuda else {}  # the default (None) elsewhere: the same kernels as ever
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                             weight_decay=cfg.weight_decay, **fused)


def check_schedule(cfg: ScheduleConfig) -> None:
    """Raises ValueError (listing the known ones) unless ``cfg.name`` is a known schedule."""
    if cfg.name not in SCHEDULES:
        raise ValueError(f"unknown schedule.name '{cfg.name}'. Known: {', '.join(SCHEDULES)}")


def lr_at(step: int, total_steps: int, lr: float, cfg: ScheduleConfig) -> float:
    """Learning rate at optimizer step ``step`` (0-based) of a ``total_steps`` run peaking at ``lr``: a linear
    warm-up to ``lr`` over ``cfg.warmup_steps``, then constant, or a cosine (Loshchilov & Hutter 2017, SGDR without
    restarts, https://arxiv.org/abs/1608.03983) or a linear decay (with warm-up: Smith's one-cycle policy,
    https://arxiv.org/abs/1803.09820) from ``lr`` to ``cfg.min_lr`` at ``total_steps``.

    With ``lr = 1`` and ``min_lr = 0`` it is the multiplier a ``LambdaLR`` applies (:func:`build_scheduler`).

    Raises:
        ValueError: unknown schedule.
    """
    return lr_at_progress(step, min((step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps), 1.0), lr, cfg)


def lr_at_progress(step: int, progress: float, lr: float, cfg: ScheduleConfig) -> float:
    """:func:`lr_at` for a run whose length is a budget (tokens or seconds) rather than a step count: the warm-up
    still counts optimizer steps, and after it the decay follows ``progress``, the share (0 to 1) of the budget left
    at the end of warm-up that has been used, so a cosine reaches ``cfg.min_lr`` exactly where the budget ends.

    Raises:
        ValueError: unknown schedule.
    """
    check_schedule(cfg)
    if step < cfg.warmup_steps:
        return lr * (step + 1) / cfg.warmup_steps
    if cfg.name == "constant":
        return lr
    progress = min(max(progress, 0.0), 1.0)
    if cfg.name == "cosine":
        return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - cfg.min_lr)
    return cfg.min_lr + (1.0 - progress) * (lr - cfg.min_lr)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The classifier weeks' per-step ``LambdaLR``: :func:`lr_at` as a multiplier of the optimizer's lr (to 0)."""
    sched = cfg.schedule_config()
    check_schedule(sched)  # validate the name now, not at the first step
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, total_steps, 1.0, sched))
