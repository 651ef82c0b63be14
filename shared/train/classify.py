"""One supervised classification run, end to end: run dir -> model -> Trainer -> registry.

Weeks call :func:`fit_classifier` once per configuration (a seed, an ablation point) and get
back everything a report needs: the metrics CSV, best/last checkpoints, the registry record.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from shared.config import to_dict
from shared.data.sampling import batch_loader
from shared.device import resolve_device
from shared.dist import DistInfo
from shared.models import ModelConfig, build_model
from shared.parallel import Parallel, build_parallel
from shared.repro import seed_everything, set_deterministic
from shared.rundir import Run, finish_run
from shared.tracking import FileLogger
from shared.train.config import TrainConfig
from shared.train.optim import build_optimizer, build_scheduler
from shared.train.trainer import Trainer, TrainResult


@dataclass
class ClassifierRun:
    """The outcome of :func:`fit_classifier`."""

    run: Run
    model: nn.Module  # in its final (last-step) state, on ``device``
    result: TrainResult
    record: dict[str, Any]  # the registry record (also ``run.dir/result.json``)
    device: torch.device

    def metrics(self) -> pd.DataFrame:
        """The run's ``metrics.csv`` as a DataFrame (numeric columns parsed)."""
        return pd.read_csv(self.run.dir / "metrics.csv")


def to_device(ds: TensorDataset, device: torch.device) -> TensorDataset:
    """The same tensors on ``device`` (MNIST-sized data lives on the GPU, no host copies per step)."""
    return TensorDataset(*(t.to(device) for t in ds.tensors))


def fit_classifier(
    run: Run,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    train_set: TensorDataset,
    val_set: TensorDataset,
    batch_size: int,
    eval_batch_size: int,
    dist_info: DistInfo | None = None,
    drop_last: bool | None = None,
    train_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> ClassifierRun:
    """Seed, build, train (resuming if the run dir has a checkpoint) and register one run.

    A run whose ``result.json`` exists and whose checkpoint is complete is not trained again and
    not registered twice: its record is read back. The run's directory lock is released on return.

    Args:
        batch_size: the micro batch per rank; the global batch is
            ``batch_size * train_cfg.grad_accum_steps * world_size``.
        dist_info: from :func:`shared.dist.init_distributed`. With ``world_size > 1`` the model is
            wrapped in DDP and each rank trains on its shard of every epoch (full micro-batches only,
            so every rank takes the same number of steps); rank 0 registers the run.
        drop_last: skip the last incomplete training batch of each epoch; default: only under DDP.
            Pass True to a single-process run that is compared step by step with a DDP run.
        train_transform: batch augmentation for training micro-batches (see :class:`Trainer`).

    The loss is cross-entropy with ``train_cfg.label_smoothing``.
    """
    ddp = dist_info is not None and dist_info.is_distributed
    seed_everything(train_cfg.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    set_deterministic(train_cfg.deterministic)
    device = dist_info.device if ddp else resolve_device(train_cfg.device)
    model = build_model(model_cfg).to(device)
    rank, world = (dist_info.rank, dist_info.world_size) if ddp else (0, 1)
    train_loader = batch_loader(train_set, batch_size, shuffle=True, seed=train_cfg.seed,
                                rank=rank, world_size=world, drop_last=ddp if drop_last is None else drop_last)
    val_loader = batch_loader(val_set, eval_batch_size, shuffle=False)
    optimizer = build_optimizer(model, train_cfg.optim())
    total_steps = train_cfg.epochs * (train_loader.sampler.batches_per_epoch // train_cfg.grad_accum_steps)
    scheduler = build_scheduler(optimizer, train_cfg, total_steps)
    logger = FileLogger(run.dir, run.run_id, train_cfg.seed)
    parallel = build_parallel("ddp", dist_info) if ddp else Parallel(DistInfo(0, 0, 1, None, device))
    trainer = Trainer(
        model, optimizer, train_loader, val_loader, train_cfg, run.dir, logger, scheduler,
        loss_fn=functools.partial(F.cross_entropy, label_smoothing=train_cfg.label_smoothing),
        meta={"run_id": run.run_id, "git_commit": run.env.get("git_commit"), "config": to_dict(run.cfg)},
        train_transform=train_transform, parallel=parallel,
    )
    try:
        result = trainer.fit()
        logger.close()
        if rank != 0:
            return ClassifierRun(run, model, result, {"run_id": run.run_id, "rank": rank}, device)
        metrics = {"best_val": result.best, "last_val": result.last_val, "steps": result.step, "epochs": result.epoch}
        if result.interrupted:
            record = {"run_id": run.run_id, "interrupted": True, "metrics": metrics}
        else:  # a finished run that is reused returns its record: registered once, when it finished
            record = finish_run(run, train_cfg.seed, metrics, result.train_time_s)
        return ClassifierRun(run, model, result, record, device)
    finally:
        run.close()
