"""Training settings, one dataclass per concern, with the same names everywhere.

- :class:`OptimConfig`: which optimizer, its hyper-parameters and the param-group rule (built outside the loop).
- :class:`ScheduleConfig`: the learning-rate schedule (warm-up, then constant, cosine or linear to ``min_lr``).
- :class:`LoopConfig`: what the step loop (:func:`shared.train.loop.fit`) does: steps, batch, accumulation,
  clipping, precision, compile, eval/log/checkpoint cadence, resume.
- :class:`TrainConfig`: the epoch-based classifier trainer of weeks 1-3 (the week-1 lesson), flat as before.

``stop_at`` means the same in both loops: stop after that many optimizer steps as if interrupted, keeping the
full run's schedule; running the same command again resumes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass
class OptimConfig:
    """The optimizer, built by :func:`shared.train.optim.build_optimizer` from a param-groups rule."""

    name: str = "adamw"  # "adamw" or "sgd"
    lr: float = 1e-3  # peak learning rate (the schedule scales it)
    beta1: float = 0.9  # AdamW
    beta2: float = 0.99  # AdamW (0.99 rather than torch's 0.999: small models, few tokens per step)
    eps: float = 1e-8  # AdamW
    momentum: float = 0.9  # SGD
    nesterov: bool = False  # SGD
    weight_decay: float = 0.1  # decoupled for AdamW, L2 for SGD; applied per the param-group rule
    param_groups: str = "decay_matrices"  # "decay_matrices" (not norms, biases, embeddings) or "all"
    fused: bool = True  # the fused CUDA AdamW kernel (ignored on CPU)


@dataclass
class ScheduleConfig:
    """Learning rate per optimizer step (:func:`shared.train.optim.lr_at`)."""

    name: str = "cosine"  # "cosine", "constant" or "linear" (after warm-up; cosine and linear end at min_lr)
    warmup_steps: int = 100  # linear warm-up from lr / warmup_steps to lr
    min_lr: float = 1e-4  # where cosine and linear end, at the last step


@dataclass
class LoopConfig:
    """The step loop: how long, in which batches, in which precision, and when it evaluates and saves."""

    max_steps: int = 5000  # optimizer steps of the whole run (the schedule's length)
    micro_batch: int = 64  # sequences (examples) per forward pass on each rank
    grad_accum_steps: int = 1  # micro-batches per optimizer step: global batch = micro_batch x this x world size
    grad_clip: float = 1.0  # clip the global gradient norm (0 = off)
    precision: str = "fp32"  # "fp32", "bf16" (autocast) or "fp16" (autocast + GradScaler)
    compile: bool = False  # torch.compile the model for training and eval
    eval_every: int = 250  # steps between evals (also at step 0 and at the end)
    log_every: int = 10  # steps between train rows in metrics.csv / TensorBoard
    print_every: int = 100  # steps between console step lines (0 = only at evals)
    ckpt_every: int = 0  # also checkpoint every N steps (0 = at every eval)
    keep_last_k: int = 2  # step checkpoints kept (the best one is always kept too)
    best_metric: str = "val_loss"  # the eval metric that picks the best checkpoint
    best_mode: str = "min"  # "min" or "max"
    stop_at: int = 0  # stop after N steps as if interrupted, keeping the max_steps schedule (0 = run to the end)
    seed: int = 1337  # initialisation and batch order
    device: str = "auto"  # "auto", "cpu", "cuda", ...
    parallel: str = "auto"  # "auto" (ddp under torchrun, else none), "none" or "ddp"
    resume: bool = True  # continue from <run_dir>/checkpoints/last when it exists
    progress: bool = True  # tqdm bar (only at a terminal, never under CI)


def run_identity(loop: LoopConfig) -> LoopConfig:
    """``loop`` without the settings that only say when to stop or how to show progress (``stop_at``, ``resume``,
    ``progress``, ``print_every``): hash this, not ``loop``, to name a run's directory, so stopping early and running
    again resumes the same run instead of starting a new one."""
    return replace(loop, stop_at=0, resume=True, progress=True, print_every=0)


@dataclass
class TrainConfig:
    """Loop, optimizer and schedule settings of the epoch-based classifier trainer (weeks 1-3)."""

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
    ckpt_every: int = 0  # also checkpoint every N steps (0: only at the end of each epoch)
    keep_last_k: int = 2  # step checkpoints kept (the best one is always kept too)
    stop_at: int = 0  # stop after N steps as if interrupted (0: run every epoch); resume continues
    resume: bool = True  # continue from <run_dir>/checkpoints/last when it exists
    best_metric: str = "acc"  # validation metric that picks the best checkpoint
    best_mode: str = "max"  # "max" or "min"
    progress: bool = True  # tqdm bar (only ever shown at a terminal, never under CI)

    def optim(self) -> OptimConfig:
        """This config's optimizer as an :class:`OptimConfig` (one weight-decay group over every parameter, torch's
        default AdamW betas): the same optimizer the classifier weeks always built."""
        return OptimConfig(name=self.optimizer, lr=self.lr, beta1=0.9, beta2=0.999, momentum=self.momentum,
                           nesterov=self.nesterov, weight_decay=self.weight_decay, param_groups="all", fused=False)

    def schedule_config(self) -> ScheduleConfig:
        """This config's schedule as a :class:`ScheduleConfig` (decay to 0)."""
        return ScheduleConfig(name=self.schedule, warmup_steps=self.warmup_steps, min_lr=0.0)
