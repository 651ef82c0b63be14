"""The parallelism strategy of a run, one object the training loops ask instead of checking wrapper types.

A :class:`Parallel` owns how the model is wrapped for training (``wrap``), how gradient synchronisation is skipped
on all but the last micro-batch of an accumulation group (``no_sync``), which process writes files (``is_main``)
and how metrics are averaged over ranks (``all_reduce_mean``). ``none`` is one process; ``ddp`` is PyTorch's
``DistributedDataParallel`` (https://docs.pytorch.org/docs/stable/notes/ddp.html) under ``torchrun``; week 10
adds ``fsdp2`` (``fully_shard``) behind the same methods.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn

from shared.dist import DistInfo, DistSetupError, all_reduce_mean, barrier

STRATEGIES = ("auto", "none", "ddp")


class Parallel:
    """A single process: the model as it is, no communication. Base class of the other strategies."""

    name = "none"

    def __init__(self, info: DistInfo | None = None) -> None:
        self.info = info or DistInfo(0, 0, 1, None, torch.device("cpu"))

    @property
    def rank(self) -> int:
        return self.info.rank

    @property
    def world_size(self) -> int:
        return self.info.world_size

    @property
    def is_main(self) -> bool:
        """True on the process that writes checkpoints, logs and results (rank 0)."""
        return self.info.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module to train (forward/backward through); the plain ``model`` keeps the weights."""
        return model

    def no_sync(self, wrapped: nn.Module) -> contextlib.AbstractContextManager:
        """Context for a micro-batch whose gradients must not be synchronised yet (all but the last of a step)."""
        return contextlib.nullcontext()

    def all_reduce_mean(self, t: torch.Tensor) -> torch.Tensor:
        """Mean of ``t`` over ranks (``t`` itself with one process)."""
        return t

    def barrier(self) -> None:
        """Wait for every rank."""


class DDPParallel(Parallel):
    """``DistributedDataParallel``: every rank holds the whole model; gradients are all-reduced (averaged) in
    buckets during the last micro-batch's backward. Needs the process group of :func:`shared.dist.init_distributed`."""

    name = "ddp"

    def __init__(self, info: DistInfo) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise DistSetupError("parallel=ddp needs a process group: launch with torchrun (e.g. `torchrun "
                                 "--nproc-per-node=2 -m weekNN_x`) or use parallel=none for one process")
        super().__init__(info)

    def wrap(self, model: nn.Module) -> nn.Module:
        device = next(model.parameters()).device
        return nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)

    def no_sync(self, wrapped: nn.Module) -> contextlib.AbstractContextManager:
        return wrapped.no_sync()

    def all_reduce_mean(self, t: torch.Tensor) -> torch.Tensor:
        return all_reduce_mean(t)

    def barrier(self) -> None:
        barrier()


_BUILDERS: dict[str, Callable[[DistInfo], Parallel]] = {"none": Parallel, "ddp": DDPParallel}


def build_parallel(strategy: str, info: DistInfo) -> Parallel:
    """The strategy named by ``strategy`` (``auto``: ``ddp`` with more than one process, else ``none``).

    Raises:
        DistSetupError: unknown strategy, ``none`` with several processes (each would train alone), or ``ddp``
            without a process group.
    """
    if strategy not in STRATEGIES:
        raise DistSetupError(f"unknown parallel strategy '{strategy}'. Choose one of: {', '.join(STRATEGIES)}")
    if strategy == "auto":
        strategy = "ddp" if info.is_distributed else "none"
    if strategy == "none" and info.is_distributed:
        raise DistSetupError(f"parallel=none with {info.world_size} processes: every rank would train its own "
                             "model. Use parallel=ddp (or auto), or launch one process")
    return _BUILDERS[strategy](info)
