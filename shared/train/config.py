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

from shared.config import ConfigError, at_least, choose, in_range, positive


@dataclass
class OptimConfig:
    """The optimizer, built by :func:`shared.train.optim.build_optimizer` from a param-groups rule."""

    name: str = "adamw"  # "adamw" or "sgd"
    lr: float = positive(1e-3)  # peak learning rate (the schedule scales it)
    beta1: float = in_range(0, 1, 0.9, hi_open=True)  # AdamW
    beta2: float = in_range(0, 1, 0.99, hi_open=True)  # AdamW (0.99 rather than torch's 0.999: small models, few tokens per step)
    eps: float = positive(1e-8)  # AdamW
    momentum: float = in_range(0, 1, 0.9, hi_open=True)  # SGD
    nesterov: bool = False  # SGD
    weight_decay: float = at_least(0, 0.1)  # decoupled for AdamW, L2 for SGD; applied per the param-group rule
    param_groups: str = "decay_matrices"  # "decay_matrices" (not norms, biases, embeddings) or "all"
    fused: bool = True  # the fused CUDA AdamW kernel (ignored on CPU)

    def validate(self) -> None:
        """Raises ValueError naming an unknown ``optim.name`` or ``optim.param_groups`` (run by ``load_config``)."""
        from shared.train.optim import PARAM_GROUP_RULES

        choose("optim.name", self.name, ("adamw", "sgd"))
        choose("optim.param_groups", self.param_groups, PARAM_GROUP_RULES)


@dataclass
class ScheduleConfig:
    """Learning rate per optimizer step (:func:`shared.train.optim.lr_at`)."""

    name: str = "cosine"  # "cosine", "constant" or "linear" (after warm-up; cosine and linear end at min_lr)
    warmup_steps: int = at_least(0, 100)  # linear warm-up from lr / warmup_steps to lr
    min_lr: float = at_least(0, 1e-4)  # where cosine and linear end, at the last step

    def validate(self) -> None:
        """Raises ValueError naming an unknown ``schedule.name``."""
        from shared.train.optim import SCHEDULES

        choose("schedule.name", self.name, SCHEDULES)


@dataclass
class LoopConfig:
    """The step loop: how long, in which batches, in which precision, and when it evaluates and saves."""

    max_steps: int = at_least(1, 5000)  # optimizer steps of the whole run (the schedule's length)
    # a token or wall-clock budget instead of max_steps (0 = off; at most one): the run stops at the budget, and the
    # schedule's decay ends there (see shared.train.loop); max_steps is then ignored
    max_tokens: int = at_least(0, 0)  # training tokens of the whole run, over every rank
    max_seconds: float = at_least(0, 0.0)  # seconds inside training steps (evals and checkpoints excluded)
    micro_batch: int = at_least(1, 64)  # sequences (examples) per forward pass on each rank
    grad_accum_steps: int = at_least(1, 1)  # micro-batches per optimizer step: global batch = micro_batch x this x world size
    grad_clip: float = at_least(0, 1.0)  # clip the global gradient norm (0 = off)
    precision: str = "fp32"  # "fp32", "bf16" (autocast) or "fp16" (autocast + GradScaler)
    compile: bool = False  # torch.compile the model for training and eval
    eval_every: int = at_least(1, 250)  # steps between evals (also at step 0 and at the end)
    log_every: int = at_least(1, 10)  # steps between train rows in metrics.csv / TensorBoard
    print_every: int = at_least(0, 100)  # steps between console step lines (0 = only at evals)
    ckpt_every: int = at_least(0, 0)  # also checkpoint every N steps (0 = at every eval)
    keep_last_k: int = at_least(1, 2)  # step checkpoints kept (the best one is always kept too)
    best_metric: str = "val_loss"  # the eval metric that picks the best checkpoint
    best_mode: str = "min"  # "min" or "max"
    stop_at: int = at_least(0, 0)  # stop after N steps as if interrupted, keeping the max_steps schedule (0 = run to the end)
    seed: int = 1337  # initialisation and batch order
    device: str = "auto"  # "auto", "cpu", "cuda", ...
    parallel: str = "auto"  # "auto" (ddp under torchrun, fsdp2 under accelerate's FSDP2 config, else none), "none", "ddp" or "fsdp2"
    resume: bool = True  # continue from <run_dir>/checkpoints/last when it exists
    progress: bool = True  # tqdm bar (only at a terminal, never under CI)

    def validate(self) -> None:
        """Raises ValueError naming an unknown ``loop.precision``, ``loop.best_mode`` or ``loop.parallel``."""
        from shared.amp import PRECISIONS
        from shared.parallel import STRATEGIES

        choose("loop.precision", self.precision, PRECISIONS)
        choose("loop.best_mode", self.best_mode, ("min", "max"))
        choose("loop.parallel", self.parallel, STRATEGIES)
        if self.max_tokens and self.max_seconds:
            raise ConfigError(f"loop.max_tokens={self.max_tokens} and loop.max_seconds={self.max_seconds:g} are both "
                              "set: a run has one budget; set the other to 0")

    def check_token_budget(self, tokens_per_step: int, world_size: int = 1) -> None:
        """Raises ConfigError when ``max_tokens`` (if set) is smaller than one optimizer step of
        ``tokens_per_step`` tokens (over every rank)."""
        if self.max_tokens and self.max_tokens < tokens_per_step:
            raise ConfigError(f"loop.max_tokens={self.max_tokens:,} is smaller than one step ({tokens_per_step:,} "
                              f"tokens: micro_batch {self.micro_batch} x grad_accum_steps {self.grad_accum_steps} x "
                              f"{world_size} ranks x the tokens per example): raise the budget or shrink the batch")

    @property
    def budget(self) -> str:
        """Which setting ends the run: ``"max_tokens"``, ``"max_seconds"`` or ``"max_steps"``."""
        return "max_tokens" if self.max_tokens else "max_seconds" if self.max_seconds else "max_steps"


def run_identity(loop: LoopConfig) -> LoopConfig:
    """``loop`` without the settings that only say when to stop or how to show progress (``stop_at``, ``resume``,
    ``progress``, ``print_every``): hash this, not ``loop``, to name a run's directory, so stopping early and running
    again resumes the same run instead of starting a new one."""
    return replace(loop, stop_at=0, resume=True, progress=True, print_every=0)


@dataclass
class TrainConfig:
    """Loop, optimizer and schedule settings of the epoch-based classifier trainer (weeks 1-3)."""

    epochs: int = at_least(1, 5)  # passes over the training split
    seed: int = 0  # seeds init and the per-epoch batch order
    optimizer: str = "sgd"  # "sgd" or "adamw"
    lr: float = positive(0.1)  # peak learning rate
    momentum: float = in_range(0, 1, 0.0, hi_open=True)  # SGD momentum (0 = plain SGD)
    nesterov: bool = False  # Nesterov momentum (SGD with momentum > 0)
    weight_decay: float = at_least(0, 0.0)  # L2 for SGD, decoupled for AdamW
    schedule: str = "constant"  # "constant", "cosine" or "linear" (both to 0 at the last step, after warm-up)
    warmup_steps: int = at_least(0, 0)  # linear warm-up from lr/warmup_steps to lr
    label_smoothing: float = in_range(0, 1, 0.0, hi_open=True)  # cross-entropy against (1 - eps) one-hot + eps uniform
    precision: str = "fp32"  # "fp32", "bf16" (autocast) or "fp16" (autocast + GradScaler)
    grad_accum_steps: int = at_least(1, 1)  # micro-batches per optimizer step (global batch = micro batch x this x world size)
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:1", ...
    deterministic: bool = True  # torch deterministic algorithms (exact reruns and resume)
    log_every: int = at_least(1, 1)  # log a train row every N steps
    ckpt_every: int = at_least(0, 0)  # also checkpoint every N steps (0: only at the end of each epoch)
    keep_last_k: int = at_least(1, 2)  # step checkpoints kept (the best one is always kept too)
    stop_at: int = at_least(0, 0)  # stop after N steps as if interrupted (0: run every epoch); resume continues
    resume: bool = True  # continue from <run_dir>/checkpoints/last when it exists
    best_metric: str = "acc"  # validation metric that picks the best checkpoint
    best_mode: str = "max"  # "max" or "min"
    progress: bool = True  # tqdm bar (only ever shown at a terminal, never under CI)

    def validate(self) -> None:
        """Raises ValueError naming an unknown ``train.optimizer``, ``train.schedule``, ``train.precision`` or
        ``train.best_mode``."""
        from shared.amp import PRECISIONS
        from shared.train.optim import SCHEDULES

        choose("train.optimizer", self.optimizer, ("sgd", "adamw"))
        choose("train.schedule", self.schedule, SCHEDULES)
        choose("train.precision", self.precision, PRECISIONS)
        choose("train.best_mode", self.best_mode, ("max", "min"))

    def optim(self) -> OptimConfig:
        """This config's optimizer as an :class:`OptimConfig` (one weight-decay group over every parameter, torch's
        default AdamW betas): the same optimizer the classifier weeks always built."""
        return OptimConfig(name=self.optimizer, lr=self.lr, beta1=0.9, beta2=0.999, momentum=self.momentum,
                           nesterov=self.nesterov, weight_decay=self.weight_decay, param_groups="all", fused=False)

    def schedule_config(self) -> ScheduleConfig:
        """This config's schedule as a :class:`ScheduleConfig` (decay to 0)."""
        return ScheduleConfig(name=self.schedule, warmup_steps=self.warmup_steps, min_lr=0.0)
