"""A small, readable supervised Trainer: train/eval phases, metrics, best and last checkpoints, resume.

The loop is written out on purpose (it is what the curriculum teaches). Exact resume works because
every source of randomness is either restored from the checkpoint (RNG states) or a pure function
of ``(seed, epoch)`` (the batch order, see :class:`shared.data.sampling.ResumableBatchSampler`),
and the epoch is restarted at the batch where the checkpoint was taken.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from shared.amp import grad_scaler
from shared.checkpoint import CheckpointError, load_checkpoint, load_model_state, save_checkpoint, unwrap
from shared.data.sampling import ResumableBatchSampler
from shared.dist import all_reduce_mean
from shared.repro import rng_state, set_rng_state
from shared.tracking import MetricLogger, console, format_step, progress_enabled
from shared.train.config import TrainConfig
from shared.train.step import NonFiniteLossError, train_step

__all__ = ["NonFiniteLossError", "TrainResult", "Trainer", "evaluate", "resolve_device"]


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> ``cuda`` when available, else ``cpu``; anything else as given.

    Raises:
        RuntimeError: a CUDA device was asked for but CUDA is not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name} but CUDA is not available; use train.device=cpu or auto")
    return device


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
    checkpoints: dict[str, Path] = field(default_factory=dict)


class Trainer:
    """Trains ``model`` on ``train_loader`` and evaluates on ``val_loader`` after every epoch.

    One optimizer step consumes ``cfg.grad_accum_steps`` micro-batches (a trailing incomplete group
    at the end of an epoch is skipped) and runs in ``cfg.precision`` (see :func:`train_step`).
    Under DDP (``model`` wrapped in ``DistributedDataParallel``, the loader sharded by rank) every
    rank runs this loop; the logged loss is the mean over ranks, every rank evaluates the whole
    validation set (the replicas are identical), and only rank 0 writes checkpoints.

    Args:
        model: maps ``x`` to logits (B, num_classes).
        optimizer, scheduler: the scheduler (optional) is stepped once per optimizer step.
        train_loader: a loader whose ``sampler`` is a :class:`ResumableBatchSampler`
            (see :func:`shared.data.sampling.batch_loader`).
        val_loader: evaluation batches.
        cfg: loop settings.
        run_dir: checkpoints go to ``run_dir/checkpoints/{last,best}.pt``.
        logger: metric sink.
        loss_fn: ``loss_fn(logits, y) -> scalar``; cross-entropy by default.
        train_transform: applied to each training micro-batch ``x`` on the device (augmentation);
            never to evaluation batches.
        meta: JSON-serialisable run description stored with every checkpoint (e.g. the config);
            ``world_size`` is added to it.

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
        self.ddp = isinstance(model, DistributedDataParallel)
        self.world_size = dist.get_world_size() if self.ddp else 1
        self.is_main = not self.ddp or dist.get_rank() == 0
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.train_loader, self.val_loader = train_loader, val_loader
        self.cfg, self.logger, self.loss_fn, self.train_transform = cfg, logger, loss_fn, train_transform
        self.meta = {**(meta or {}), "world_size": self.world_size}
        self.device = next(model.parameters()).device
        self.scaler = grad_scaler(self.device, cfg.precision)
        self.ckpt_dir = Path(run_dir) / "checkpoints"
        self.progress: dict[str, Any] = {
            "step": 0, "epoch": 0, "batch": 0, "best": None, "last_val": {}, "train_time_s": 0.0,
        }

    @property
    def last_path(self) -> Path:
        return self.ckpt_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.ckpt_dir / "best.pt"

    @property
    def steps_per_epoch(self) -> int:
        return self.train_loader.sampler.batches_per_epoch // self.cfg.grad_accum_steps

    def _save(self, path: Path, extra_meta: dict[str, Any] | None = None) -> None:
        if not self.is_main:  # the replicas are identical; rank 0 writes for everyone
            return
        progress = {**self.progress, "grad_scaler": self.scaler.state_dict()}
        save_checkpoint(
            path, self.model, self.optimizer, self.scheduler,
            progress=progress, rng=rng_state(), meta={**self.meta, **(extra_meta or {})},
        )
        self.logger.flush()

    def _try_resume(self) -> None:
        if not (self.cfg.resume and self.last_path.is_file()):
            self.logger.resume(step=-1)
            return
        # Load on the CPU: load_state_dict copies weights and optimizer state onto the parameters' device,
        # and the RNG states must be CPU tensors anyway.
        state = load_checkpoint(self.last_path, map_location="cpu")
        load_model_state(self.model, state, source=str(self.last_path))
        saved_world = state["meta"].get("world_size", 1)
        if saved_world != self.world_size:
            raise CheckpointError(
                f"{self.last_path} was written by a run with world_size={saved_world}, this run has "
                f"world_size={self.world_size}: the data position cannot be carried over. Relaunch with "
                f"{saved_world} processes, or start a new run (train.resume=false or another run directory)."
            )
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        progress = dict(state["progress"])
        if progress.get("grad_scaler"):
            self.scaler.load_state_dict(progress["grad_scaler"])
        progress.pop("grad_scaler", None)
        self.progress.update(progress)
        self.logger.resume(step=self.progress["step"])
        p = self.progress
        console(f"resumed from {self.last_path} at step {p['step']} (epoch {p['epoch']}, batch {p['batch']})")

    def _is_better(self, value: float) -> bool:
        best = self.progress["best"]
        if best is None:
            return True
        return value > best[self.cfg.best_metric] if self.cfg.best_mode == "max" else value < best[self.cfg.best_metric]

    def fit(self) -> TrainResult:
        """Run (or resume) training to ``cfg.epochs`` or ``cfg.max_steps``; see :class:`TrainResult`.

        Raises:
            NonFiniteLossError: the loss is NaN/inf (the message says where and what to try).
        """
        from tqdm import tqdm

        self._try_resume()
        cfg, p, sampler = self.cfg, self.progress, self.train_loader.sampler
        k = cfg.grad_accum_steps
        self.model.train()
        interrupted = False
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
                    if cfg.max_steps and p["step"] >= cfg.max_steps:
                        interrupted = True
                        self._save(self.last_path)
                        break
                    micro = [(x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)) for x, y in group]
                    if self.train_transform is not None:
                        micro = [(self.train_transform(x), y) for x, y in micro]
                    try:
                        loss = train_step(
                            self.model, self.optimizer, micro, self.loss_fn, precision=cfg.precision, scaler=self.scaler,
                        )
                    except NonFiniteLossError as e:
                        raise NonFiniteLossError(f"step {p['step']} (epoch {epoch}): {e}") from e
                    if self.scheduler is not None:
                        self.scheduler.step()
                    p["step"] += 1
                    p["batch"] += k
                    seen += sum(y.numel() for _, y in micro) * self.world_size
                    bar.update(1)
                    if p["step"] % cfg.log_every == 0:
                        now = time.perf_counter()
                        row = {
                            "loss": (all_reduce_mean(loss) if self.ddp else loss).item(),
                            "lr": self.optimizer.param_groups[0]["lr"],
                            "samples_per_sec": seen / max(now - t_log, 1e-9),
                        }
                        self.logger.log("train", p["step"], epoch, **row)
                        bar.set_postfix(loss=f"{row['loss']:.4f}", samples_s=f"{row['samples_per_sec']:,.0f}")
                        t_log, seen = now, 0
                    if cfg.ckpt_every and p["step"] % cfg.ckpt_every == 0:
                        self._save(self.last_path)
                bar.close()
                p["train_time_s"] += time.perf_counter() - t_epoch
                if interrupted:
                    break
                val = evaluate(unwrap(self.model), self.val_loader, self.device)
                p["epoch"], p["batch"], p["last_val"] = epoch + 1, 0, val
                self.logger.log("val", p["step"], epoch + 1, loss=val["loss"], acc=val["acc"],
                                train_time_s=p["train_time_s"])
                console(format_step(p["step"], {"epoch": epoch + 1, "val_loss": val["loss"], "val_acc": val["acc"]}))
                if self._is_better(val[cfg.best_metric]):
                    p["best"] = {**val, "step": p["step"], "epoch": epoch + 1}
                    self._save(self.best_path, {"val": val})
                self._save(self.last_path)
        except KeyboardInterrupt:
            self._save(self.last_path)
            console(f"interrupted: saved {self.last_path}; run the same command again to resume")
            raise
        if self.ddp:
            dist.barrier()  # no rank starts using the checkpoints before rank 0 has written them
        return TrainResult(
            step=p["step"], epoch=p["epoch"], interrupted=interrupted, best=p["best"] or {},
            last_val=p["last_val"], train_time_s=p["train_time_s"],
            checkpoints={"last": self.last_path, "best": self.best_path},
        )
