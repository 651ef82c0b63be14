"""Training: the split configs, optimizers and the schedule, one optimizer step, the one step loop (``loop.fit``)
with its pre-training recipe (``pretrain``), and the epoch-based classifier Trainer of weeks 1-3."""

from shared.train.config import LoopConfig, OptimConfig, ScheduleConfig, TrainConfig, run_identity
from shared.train.optim import build_optimizer, build_scheduler, lr_at, param_groups
from shared.train.step import NonFiniteLossError, train_step

__all__ = [
    "LoopConfig",
    "NonFiniteLossError",
    "OptimConfig",
    "ScheduleConfig",
    "TrainConfig",
    "build_optimizer",
    "build_scheduler",
    "lr_at",
    "param_groups",
    "run_identity",
    "train_step",
]
