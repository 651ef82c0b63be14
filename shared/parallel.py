"""The parallelism strategy of a run, one object the training loops ask instead of checking wrapper types.

A :class:`Parallel` owns how the model is wrapped for training (``wrap``), how gradient synchronisation is skipped
on all but the last micro-batch of an accumulation group (``no_sync``), which process writes files (``is_main``)
and how metrics are averaged over ranks (``all_reduce_mean``). ``none`` is one process; ``ddp`` is PyTorch's
``DistributedDataParallel`` (https://docs.pytorch.org/docs/stable/notes/ddp.html) under ``torchrun``; ``fsdp2`` is
PyTorch's FSDP2 (``fully_shard``, https://docs.pytorch.org/docs/stable/distributed.fsdp.fully_shard.html): each rank
keeps only its shard of every parameter, gradient and optimizer state, and all-gathers a block's parameters just
before that block runs (ZeRO-3, Rajbhandari et al. 2020, https://arxiv.org/abs/1910.02054). The strategy also picks
the checkpoint format (:meth:`Parallel.checkpointer`): one safetensors file for replicas, a sharded
``torch.distributed.checkpoint`` folder for FSDP2.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from shared.config import ConfigError
from shared.dist import DistInfo, DistSetupError, all_reduce_mean, barrier

if TYPE_CHECKING:
    from shared.checkpoint import Checkpointer

STRATEGIES = ("auto", "none", "ddp", "fsdp2")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


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

    def wrap(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> nn.Module:
        """The module to train (forward/backward through); the plain ``model`` keeps the weights. A strategy that
        replaces the parameters (FSDP2) points ``optimizer`` at the new ones, so wrap before loading any state."""
        return model

    def no_sync(self, wrapped: nn.Module) -> contextlib.AbstractContextManager:
        """Context for a micro-batch whose gradients must not be synchronised yet (all but the last of a step)."""
        return contextlib.nullcontext()

    def all_reduce_mean(self, t: torch.Tensor) -> torch.Tensor:
        """Mean of ``t`` over ranks (``t`` itself with one process)."""
        return t

    def barrier(self) -> None:
        """Wait for every rank."""

    def checkpointer(self, directory: str | Path, keep_last_k: int = 2,
                     meta: dict[str, Any] | None = None) -> Checkpointer:
        """Where a run of this strategy saves: a :class:`shared.checkpoint.FileCheckpointer` written by the main
        process (every rank holds the same replica)."""
        from shared.checkpoint import FileCheckpointer

        return FileCheckpointer(directory, keep_last_k, meta, is_main=self.is_main)


class DDPParallel(Parallel):
    """``DistributedDataParallel``: every rank holds the whole model; gradients are all-reduced (averaged) in
    buckets during the last micro-batch's backward. Needs the process group of :func:`shared.dist.init_distributed`."""

    name = "ddp"

    def __init__(self, info: DistInfo) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise DistSetupError(f"parallel={self.name} needs a process group: launch with torchrun (e.g. `torchrun "
                                 "--nproc-per-node=2 -m weekNN_x`) or use parallel=none for one process")
        super().__init__(info)

    def wrap(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> nn.Module:
        device = next(model.parameters()).device
        return nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)

    def no_sync(self, wrapped: nn.Module) -> contextlib.AbstractContextManager:
        return wrapped.no_sync()

    def all_reduce_mean(self, t: torch.Tensor) -> torch.Tensor:
        return all_reduce_mean(t)

    def barrier(self) -> None:
        barrier()


@dataclass
class FSDPConfig:
    """FSDP2's options (the ``fsdp`` section of a config; used by ``parallel=fsdp2`` only)."""

    param_dtype: str = "fp32"  # "fp32" or "bf16": the dtype blocks compute in (the sharded master copy stays fp32)
    reduce_dtype: str = "fp32"  # "fp32" or "bf16": the dtype gradients are reduce-scattered in
    reshard_after_forward: bool = True  # False: keep the gathered parameters from forward to backward (~ZeRO-2)
    activation_checkpointing: bool = False  # recompute each block's activations in backward (keep its input only)
    cpu_offload: bool = False  # keep sharded parameters, gradients and optimizer state in CPU memory (GPU runs)

    def validate(self) -> None:
        """Raises ConfigError naming a dtype that is not ``fp32``/``bf16``."""
        for name in ("param_dtype", "reduce_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ConfigError(f"fsdp.{name}='{getattr(self, name)}' is not a dtype FSDP2 trains in here. "
                                  f"Choose one of: {', '.join(DTYPES)}")


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a transformer: the children of its largest ``nn.ModuleList`` (``GPT.blocks``, a
    Hugging Face model's ``model.layers``). These are FSDP2's units: one all-gather per block.

    Raises:
        ValueError: the model has no ``nn.ModuleList`` (nothing to shard block by block).
    """
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m)]
    if not lists:
        raise ValueError(f"{type(model).__name__} has no nn.ModuleList of blocks: FSDP2 would shard it as one unit. "
                         "Use parallel=ddp, or give the model its blocks in an nn.ModuleList")
    return list(max(lists, key=len))


class FSDP2Parallel(DDPParallel):
    """FSDP2 (``fully_shard``) on every transformer block and on the root.

    Each block's parameters become ``DTensor`` shards (dim 0 split over the ranks); its forward all-gathers them
    and, with ``reshard_after_forward`` (ZeRO-3), frees them again, all-gathering once more in backward; without
    it (~ZeRO-2) they stay gathered until the block's backward. Gradients are reduce-scattered, so every rank holds
    1/N of the gradients and, through the optimizer, of its state: ~16Ψ/N bytes for fp32 AdamW instead of DDP's 16Ψ.
    ``fully_shard`` changes the module in place, so ``wrap`` returns the same object. Accumulation skips the
    reduce-scatter on all but the last micro-batch (``set_requires_gradient_sync(False)``); the unsharded gradients
    then wait in memory until the last one.

    Warns (``UserWarning``) when there are more ranks than blocks: a rank would then hold one block's shard only
    because dim 0 is split finely, and the all-gathers dominate.
    """

    name = "fsdp2"

    def __init__(self, info: DistInfo, cfg: FSDPConfig | None = None) -> None:
        super().__init__(info)
        self.cfg = cfg or FSDPConfig()
        self.cfg.validate()

    def wrap(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> nn.Module:
        """Shard ``model`` in place (blocks, then the root) and point ``optimizer`` at the sharded parameters.

        Raises:
            RuntimeError: ``optimizer`` already holds state (it would belong to the replaced full parameters: load a
                checkpoint after wrapping, through ``torch.distributed.checkpoint``).
        """
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

        if hasattr(model, "set_requires_gradient_sync"):  # already sharded (a second fit on the same model)
            return model
        if optimizer is not None and optimizer.state:
            raise RuntimeError("the optimizer has state before fully_shard: it belongs to the full parameters that "
                               "sharding replaces. Wrap first, then load the optimizer state")
        names = {id(p): n for n, p in model.named_parameters()}
        cfg = self.cfg
        blocks = transformer_blocks(model)
        if self.world_size > len(blocks):
            warnings.warn(f"parallel=fsdp2 on {self.world_size} ranks but {type(model).__name__} has {len(blocks)} "
                          "blocks: sharding finer than the model's blocks saves little memory per extra rank while "
                          "every block still all-gathers from all of them. Use fewer ranks or parallel=ddp",
                          stacklevel=2)
        mp = MixedPrecisionPolicy(param_dtype=DTYPES[cfg.param_dtype], reduce_dtype=DTYPES[cfg.reduce_dtype])
        kw: dict[str, Any] = {"mp_policy": mp, "reshard_after_forward": cfg.reshard_after_forward,
                              "offload_policy": CPUOffloadPolicy() if cfg.cpu_offload else OffloadPolicy()}
        for block in blocks:
            if cfg.activation_checkpointing:
                from torch.distributed._composable import checkpoint

                checkpoint(block)  # in place: the state-dict keys stay those of the plain model
            fully_shard(block, **kw)
        fully_shard(model, **kw)
        if optimizer is not None:  # fully_shard swapped every parameter for a DTensor one: the optimizer must follow
            sharded = dict(model.named_parameters())
            for group in optimizer.param_groups:
                group["params"] = [sharded[names[id(p)]] for p in group["params"]]
        return model

    def no_sync(self, wrapped: nn.Module) -> contextlib.AbstractContextManager:
        return _gradient_sync_off(wrapped)

    def checkpointer(self, directory: str | Path, keep_last_k: int = 2,
                     meta: dict[str, Any] | None = None) -> Checkpointer:
        """A :class:`shared.dcp.DCPCheckpointer`: every rank writes its own shards."""
        from shared.dcp import DCPCheckpointer

        return DCPCheckpointer(directory, keep_last_k, meta)


@contextlib.contextmanager
def _gradient_sync_off(model: nn.Module) -> Iterator[None]:
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def fsdp_from_accelerate() -> FSDPConfig | None:
    """FSDP2's options from the environment ``accelerate launch`` sets for an FSDP config file
    (``ACCELERATE_USE_FSDP=true``, ``FSDP_VERSION=2``, ``FSDP_RESHARD_AFTER_FORWARD``,
    ``FSDP_ACTIVATION_CHECKPOINTING``, ``FSDP_OFFLOAD_PARAMS``; https://huggingface.co/docs/accelerate/usage_guides/fsdp),
    so the same script runs under ``accelerate launch`` and ``torchrun``; None when accelerate did not ask for FSDP.

    Raises:
        DistSetupError: accelerate asked for FSDP version 1 (this project shards with FSDP2 only).
    """
    env = os.environ
    if env.get("ACCELERATE_USE_FSDP", "").lower() != "true":
        return None
    if env.get("FSDP_VERSION", "1") != "2":
        raise DistSetupError(f"accelerate launched with FSDP version {env.get('FSDP_VERSION', '1')}: set "
                             "fsdp_version: 2 in the accelerate config (FSDP1's FlatParameter API is not used here)")

    def flag(name: str, default: bool) -> bool:
        return env.get(name, str(default)).lower() == "true"

    return FSDPConfig(reshard_after_forward=flag("FSDP_RESHARD_AFTER_FORWARD", True),
                      activation_checkpointing=flag("FSDP_ACTIVATION_CHECKPOINTING", False),
                      cpu_offload=flag("FSDP_OFFLOAD_PARAMS", False))


_BUILDERS: dict[str, Callable[..., Parallel]] = {"none": Parallel, "ddp": DDPParallel, "fsdp2": FSDP2Parallel}


def build_parallel(strategy: str, info: DistInfo, fsdp: FSDPConfig | None = None) -> Parallel:
    """The strategy named by ``strategy`` (``auto``: ``fsdp2`` when ``accelerate launch`` asked for FSDP2
    (:func:`fsdp_from_accelerate`), else ``ddp`` with more than one process, else ``none``).

    Args:
        fsdp: FSDP2's options (``strategy="fsdp2"`` only; default :class:`FSDPConfig`).

    Raises:
        DistSetupError: unknown strategy, ``none`` with several processes (each would train alone), or ``ddp`` /
            ``fsdp2`` without a process group.
        ConfigError: a bad ``fsdp`` option.
    """
    if strategy not in STRATEGIES:
        raise DistSetupError(f"unknown parallel strategy '{strategy}'. Choose one of: {', '.join(STRATEGIES)}")
    if strategy == "auto":
        from_accelerate = fsdp_from_accelerate()
        if from_accelerate is not None and info.is_distributed:
            strategy, fsdp = "fsdp2", fsdp or from_accelerate
        else:
            strategy = "ddp" if info.is_distributed else "none"
    if strategy == "none" and info.is_distributed:
        raise DistSetupError(f"parallel=none with {info.world_size} processes: every rank would train its own "
                             "model. Use parallel=ddp (or auto), or launch one process")
    if strategy == "fsdp2":
        return FSDP2Parallel(info, fsdp)
    return _BUILDERS[strategy](info)
