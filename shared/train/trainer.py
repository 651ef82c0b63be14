"""A small, readable supervised Trainer by epochs: train/eval phases, metrics, best and last checkpoints, resume.

The loop is written out on purpose (it is the week-1 lesson; the language-model weeks use the step loop of
:mod:`shared.train.loop`). It shares that loop's pieces: one optimizer step (:func:`shared.train.step.train_step`),
the checkpointer (:class:`shared.checkpoint.FileCheckpointer`), the parallel strategy
(:class:`shared.parallel.Parallel`) and the metric logger. Exact resume works because every source of randomness is
either restored from the checkpoint (RNG states) or a pure function of ``(seed, epoch)`` (the batch order, see
:class:`shared.data.sampling.ResumableBatchSampler`), and the epoch is restarted at the batch where the checkpoint
was taken. Ctrl-C stops at a step boundary as in the step loop: the current step finishes, is saved, and the run
stops (a second Ctrl-C stops at once and saves nothing from inside a step).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from shared.amp import grad_scaler
from shared.checkpoint import CheckpointError, FileCheckpointer, unwrap
from shared.data.sampling import ResumableBatchSampler
from shared.parallel import Parallel
from shared.repro import rng_state, set_rng_state
from shared.tracking import MetricLogger, console, format_step, progress_enabled
from shared.train.config import TrainConfig
from shared.train.loop import stop_at_step_boundary
from shared.train.step import NonFiniteLossError, train_step, xy_loss

__all__ = ["NonFiniteLossError", "TrainResult", "Trainer", "evaluate"]


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> dict[str, float]:
    """Mean cross-entropy (nats) and accuracy over a loader of ``(x, y)`` batches.

    Returns:
        ``{"loss": float, "acc": float in [0, 1], "n": int}``.
    """
    was_training = model.training
    model.eval()
    total_loss, correct, n = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x)  # (B, num_classes)
        total_loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(dim=1) == y).sum().item()
        n += y.numel()
    model.train(was_training)
    return {"loss": total_loss / n, "acc": correct / n, "n": n}


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns."""

    step: int
    epoch: int
    interrupted: bool
    best: dict[str, float]
    last_val: dict[str, float]
    train_time_s: float
    checkpoints: dict[str, Path | None] = field(default_factory=dict)


class Trainer:
    """Trains ``model`` on ``train_loader`` and evaluates on ``val_loader`` after every epoch.

    One optimizer step consumes ``cfg.grad_accum_steps`` micro-batches (a trailing incomplete group
    at the end of an epoch is skipped) and runs in ``cfg.precision`` (see :func:`train_step`).
    Under DDP (``parallel`` a DDP strategy, the loader sharded by rank) every rank runs this loop; the logged
    loss is the mean over ranks, every rank evaluates the whole validation set (the replicas are identical),
    and only rank 0 writes checkpoints.

    Args:
        model: the plain module, mapping ``x`` to logits (B, num_classes); ``parallel`` wraps it for training.
        optimizer, scheduler: the scheduler (optional) is stepped once per optimizer step.
        train_loader: a loader whose ``sampler`` is a :class:`ResumableBatchSampler`
            (see :func:`shared.data.sampling.batch_loader`).
        val_loader: evaluation batches.
        cfg: loop settings.
        run_dir: checkpoints go to ``run_dir/checkpoints/`` (``step-N`` folders, ``last`` and ``best``).
        logger: metric sink.
        loss_fn: ``loss_fn(logits, y) -> scalar``; cross-entropy by default.
        train_transform: applied to each training micro-batch ``x`` on the device (augmentation);
            never to evaluation batches.
        meta: JSON-serialisable run description stored with every checkpoint (e.g. the config);
            ``world_size`` is added to it.
        parallel: the strategy (default: one process).

    Raises:
        TypeError: ``train_loader.sampler`` cannot resume mid-epoch.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        train_loader: DataLoader,
        val_loader: DataLoader,
        cfg: TrainConfig,
        run_dir: str | Path,
        logger: MetricLogger,
        scheduler: Any | None = None,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
        meta: dict[str, Any] | None = None,
        train_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        parallel: Parallel | None = None,
    ) -> None:
        if not isinstance(train_loader.sampler, ResumableBatchSampler):
            raise TypeError("train_loader must come from shared.data.sampling.batch_loader (a ResumableBatchSampler)")
        if cfg.best_mode not in ("max", "min"):
            raise ValueError(f"train.best_mode must be 'max' or 'min', got '{cfg.best_mode}'")
        if cfg.grad_accum_steps < 1:
            raise ValueError(f"train.grad_accum_steps must be >= 1, got {cfg.grad_accum_steps}")
        if train_loader.sampler.batches_per_epoch < cfg.grad_accum_steps:
            raise ValueError(
                f"an epoch has {train_loader.sampler.batches_per_epoch} micro-batches on this rank, fewer than "
                f"train.grad_accum_steps={cfg.grad_accum_steps}: lower the micro batch or the accumulation steps"
            )
        self.parallel = parallel or Parallel()
        self.world_size, self.is_main = self.parallel.world_size, self.parallel.is_main
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.fwd = self.parallel.wrap(model)
        self.train_loader, self.val_loader = train_loader, val_loader
        self.cfg, self.logger, self.loss_fn, self.train_transform = cfg, logger, loss_fn, train_transform
        self.step_loss = xy_loss(loss_fn)
        self.meta = {**(meta or {}), "world_size": self.world_size}
        self.device = next(model.parameters()).device
        self.scaler = grad_scaler(self.device, cfg.precision)
        self.checkpointer = FileCheckpointer(Path(run_dir) / "checkpoints", cfg.keep_last_k, self.meta, self.is_main)
        self.progress: dict[str, Any] = {
            "step": 0, "epoch": 0, "batch": 0, "best": None, "last_val": {}, "train_time_s": 0.0,
        }

    @property
    def steps_per_epoch(self) -> int:
        return self.train_loader.sampler.batches_per_epoch // self.cfg.grad_accum_steps

    def _save(self, best: bool = False) -> None:
        state = {"scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                 "rng": rng_state(), "scaler": self.scaler.state_dict()}
        self.checkpointer.save(self.progress["step"], self.model, self.optimizer, state=state, progress=self.progress,
                               best=best)
        if self.is_main:
            self.logger.flush()

    def _try_resume(self) -> None:
        if not self.cfg.resume:
            self.checkpointer.reset()
        # load_state_dict copies weights and optimizer state onto the parameters' device
        ck = self.checkpointer.load(self.model, self.optimizer) if self.cfg.resume else None
        if ck is None:
            self.logger.resume(step=-1)
            return
        saved_world = ck.meta.get("world_size", 1)
        if saved_world != self.world_size:
            raise CheckpointError(
                f"{ck.path} was written by a run with world_size={saved_world}, this run has "
                f"world_size={self.world_size}: the data position cannot be carried over. Relaunch with "
                f"{saved_world} processes, or start a new run (train.resume=false or another run directory)."
            )
        if self.scheduler is not None and ck.state.get("scheduler") is not None:
            self.scheduler.load_state_dict(ck.state["scheduler"])
        set_rng_state(ck.state["rng"])
        if ck.state.get("scaler"):
            self.scaler.load_state_dict(ck.state["scaler"])
        self.progress.update(ck.progress)
        self.logger.resume(step=self.progress["step"])
        p = self.progress
        console(f"resumed from {ck.path} at step {p['step']} (epoch {p['epoch']}, batch {p['batch']})")

    def _is_better(self, value: float) -> bool:
        best = self.progress["best"]
        if best is None:
            return True
        return value > best[self.cfg.best_metric] if self.cfg.best_mode == "max" else value < best[self.cfg.best_metric]

    def fit(self) -> TrainResult:
        """Run (or resume) training to ``cfg.epochs``, or to ``cfg.stop_at`` steps; see :class:`TrainResult`.

        Raises:
            NonFiniteLossError: the loss is NaN/inf (the message says where and what to try).
            KeyboardInterrupt: Ctrl-C, after saving (see the module docstring).
        """
        from tqdm import tqdm

        self._try_resume()
        cfg, p, sampler = self.cfg, self.progress, self.train_loader.sampler
        k = cfg.grad_accum_steps
        self.model.train()
        interrupted, in_step = False, False
        with stop_at_step_boundary() as interrupt:
            try:
                while p["epoch"] < cfg.epochs and not interrupted:
                    epoch = p["epoch"]
                    sampler.set_epoch(epoch, start_batch=p["batch"])
                    bar = tqdm(
                        total=self.steps_per_epoch, initial=p["batch"] // k,
                        desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                        disable=not (cfg.progress and progress_enabled()),
                    )
                    t_epoch = t_log = time.perf_counter()
                    seen = 0
                    batches = iter(self.train_loader)
                    while True:
                        group = list(itertools.islice(batches, k))
                        if len(group) < k:  # end of epoch (an incomplete accumulation group is skipped)
                            break
                        if cfg.stop_at and p["step"] >= cfg.stop_at:
                            interrupted = True
                            self._save()
                            break
                        micro = [(x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True))
                                 for x, y in group]
                        if self.train_transform is not None:
                            micro = [(self.train_transform(x), y) for x, y in micro]
                        in_step = True
                        try:
                            loss, _ = train_step(self.fwd, self.optimizer, micro, self.step_loss,
                                                 precision=cfg.precision, scaler=self.scaler, parallel=self.parallel)
                        except NonFiniteLossError as e:
                            raise NonFiniteLossError(f"step {p['step']} (epoch {epoch}): {e}") from e
                        if self.scheduler is not None:
                            self.scheduler.step()
                        p["step"] += 1
                        p["batch"] += k
                        in_step = False
                        seen += sum(y.numel() for _, y in micro) * self.world_size
                        bar.update(1)
                        if p["step"] % cfg.log_every == 0:
                            now = time.perf_counter()
                            row = {
                                "loss": self.parallel.all_reduce_mean(loss).item(),
                                "lr": self.optimizer.param_groups[0]["lr"],
                                "samples_per_sec": seen / max(now - t_log, 1e-9),
                            }
                            self.logger.log("train", p["step"], epoch, **row)
                            bar.set_postfix(loss=f"{row['loss']:.4f}", samples_s=f"{row['samples_per_sec']:,.0f}")
                            t_log, seen = now, 0
                        if interrupt["stop"]:  # the first Ctrl-C: this step is done, save it and stop
                            self._save()
                            raise KeyboardInterrupt
                        if cfg.ckpt_every and p["step"] % cfg.ckpt_every == 0:
                            self._save()
                    bar.close()
                    p["train_time_s"] += time.perf_counter() - t_epoch
                    if interrupted:
                        break
                    val = evaluate(unwrap(self.model), self.val_loader, self.device)
                    p["epoch"], p["batch"], p["last_val"] = epoch + 1, 0, val
                    self.logger.log("val", p["step"], epoch + 1, loss=val["loss"], acc=val["acc"],
                                    train_time_s=p["train_time_s"])
                    console(format_step(p["step"], {"epoch": epoch + 1, "val_loss": val["loss"], "val_acc": val["acc"]}))
                    better = self._is_better(val[cfg.best_metric])
                    if better:
                        p["best"] = {**val, "step": p["step"], "epoch": epoch + 1}
                    self._save(best=better)
            except KeyboardInterrupt:
                if in_step:  # a second Ctrl-C inside a step: the weights and optimizer may be half-updated
                    console(f"interrupted inside step {p['step']}: not saved; the same command resumes from "
                            f"{self.checkpointer.path('last')}")
                    raise
                if not interrupt["stop"]:  # between steps (e.g. in an eval): the state is consistent
                    self._save()
                console(f"interrupted: saved step {p['step']} to {self.checkpointer.path('last')}; run the same "
                        "command again to resume")
                raise
        self.parallel.barrier()  # no rank starts using the checkpoints before rank 0 has written them
        return TrainResult(
            step=p["step"], epoch=p["epoch"], interrupted=interrupted, best=p["best"] or {},
            last_val=p["last_val"], train_time_s=p["train_time_s"],
            checkpoints={"last": self.checkpointer.path("last"), "best": self.checkpointer.path("best")},
        )
