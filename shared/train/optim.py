"""Optimizer and learning-rate schedule built from the ``train`` config section."""

from __future__ import annotations

import math

import torch
from torch import nn

from shared.train.config import TrainConfig


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD or AdamW over all trainable parameters.

    Raises:
        ValueError: unknown optimizer name.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.nesterov)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown train.optimizer '{cfg.optimizer}'. Known: sgd, adamw")


def lr_factor(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Multiplier of ``cfg.lr`` at ``step`` (0-based): linear warm-up, then constant, cosine or linear decay.

    Cosine decay follows Loshchilov & Hutter 2017 (SGDR, https://arxiv.org/abs/1608.03983) without
    restarts, reaching 0 at ``total_steps``.
    """
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    progress = min((step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps), 1.0)
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if cfg.schedule == "linear":  # with warm-up: the triangular one-cycle policy (Smith 2018, arXiv:1803.09820)
        return 1.0 - progress
    raise ValueError(f"unknown train.schedule '{cfg.schedule}'. Known: constant, cosine, linear")


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR`` applying :func:`lr_factor`."""
    lr_factor(0, total_steps, cfg)  # validate the schedule name now, not at the first step
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, cfg))
