"""Training: the ``train`` config, optimizer/schedule builders, and the Trainer."""

from shared.train.config import TrainConfig
from shared.train.optim import build_optimizer, build_scheduler, lr_factor
from shared.train.step import train_step
from shared.train.trainer import NonFiniteLossError, Trainer, TrainResult, evaluate, resolve_device

__all__ = [
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "build_optimizer",
    "build_scheduler",
    "evaluate",
    "lr_factor",
    "resolve_device",
    "train_step",
]
