"""The ``train`` section of a config: loop, optimizer and schedule settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    """Loop, optimizer and schedule settings shared by the supervised weeks."""

    epochs: int = 5  # passes over the training split
    seed: int = 0  # seeds init and the per-epoch batch order
    optimizer: str = "sgd"  # "sgd" or "adamw"
    lr: float = 0.1  # peak learning rate
    momentum: float = 0.0  # SGD momentum (0 = plain SGD)
    nesterov: bool = False  # Nesterov momentum (SGD with momentum > 0)
    weight_decay: float = 0.0  # L2 for SGD, decoupled for AdamW
    schedule: str = "constant"  # "constant", "cosine" or "linear" (both to 0 at the last step, after warm-up)
    warmup_steps: int = 0  # linear warm-up from lr/warmup_steps to lr
    label_smoothing: float = 0.0  # cross-entropy against (1 - eps) one-hot + eps uniform
    precision: str = "fp32"  # "fp32", "bf16" (autocast) or "fp16" (autocast + GradScaler)
    grad_accum_steps: int = 1  # micro-batches per optimizer step (global batch = micro batch x this x world size)
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:1", ...
    deterministic: bool = True  # torch deterministic algorithms (exact reruns and resume)
    log_every: int = 1  # log a train row every N steps
    ckpt_every: int = 0  # also save last.pt every N steps (0: only at the end of each epoch)
    max_steps: int = 0  # stop after N steps as if interrupted (0: run every epoch); resume continues
    resume: bool = True  # continue from <run_dir>/checkpoints/last.pt when it exists
    best_metric: str = "acc"  # validation metric that picks best.pt
    best_mode: str = "max"  # "max" or "min"
    progress: bool = True  # tqdm bar (only ever shown at a terminal, never under CI)
