"""Distributed checkpoints: every rank writes its own shards with ``torch.distributed.checkpoint`` (DCP).

A sharded model (FSDP2) has no rank that holds the whole of it, so one rank cannot write one file. DCP
(https://docs.pytorch.org/docs/stable/distributed.checkpoint.html) has each rank write the shards it owns into one
folder, plus a ``.metadata`` file that maps every tensor's global shape to the pieces; loading reads the pieces a rank
needs for *its* shards, so a checkpoint written by 2 ranks loads into 1 or 4 (resharding), or into a plain model in
one process (the export path to safetensors / Hugging Face).

:class:`DCPCheckpointer` keeps :class:`shared.checkpoint.FileCheckpointer`'s folder contract: ``step-N/`` written into a
``.tmp-*`` folder and renamed into place by rank 0 once every rank has finished (so a folder with ``meta.json`` is
complete), ``last``/``best`` pointers, ``keep_last_k``, another model or tokenizer refused. ``step-N/`` holds the DCP
files (``__<rank>_0.distcp``, ``.metadata``), ``rank<R>.pt`` (each rank's RNG and GradScaler state, read with
``weights_only=True``) and ``meta.json``. The model and optimizer state dicts come from
``torch.distributed.checkpoint.state_dict`` (fully qualified parameter names, the same for a plain, DDP or FSDP2
model), so the keys of a checkpoint never depend on the wrapper.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from shared.checkpoint import TMP_PREFIX, Checkpoint, CheckpointError, FileCheckpointer
from shared.dist import barrier


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def saved_shapes(path: str | Path, prefix: str = "model.") -> dict[str, tuple[int, ...]]:
    """``{name: global shape}`` of the tensors under ``prefix`` in the DCP folder ``path`` (read from ``.metadata``).

    Raises:
        CheckpointError: ``path`` holds no readable DCP metadata.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    try:
        md = dcp.FileSystemReader(str(path)).read_metadata()
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable distributed checkpoint (no .metadata): {e}") from e
    return {k[len(prefix):]: tuple(v.size) for k, v in md.state_dict_metadata.items()
            if k.startswith(prefix) and isinstance(v, TensorStorageMetadata)}


def check_keys(path: str | Path, model_state: dict[str, Any], source: str | None = None) -> None:
    """Refuse a checkpoint written for another model: every missing key, unexpected key and shape mismatch named.

    Args:
        model_state: the model's state dict from ``get_model_state_dict`` (global shapes; DTensors allowed).

    Raises:
        CheckpointError: the keys or shapes differ.
    """
    saved = saved_shapes(path)
    source = source or str(path)
    problems = [f"missing in {source}: {k}" for k in model_state.keys() - saved.keys()]
    problems += [f"unexpected in {source}: {k}" for k in saved.keys() - model_state.keys()]
    problems += [f"{k}: {source} has shape {saved[k]}, model has {tuple(v.shape)}"
                 for k, v in model_state.items() if k in saved and saved[k] != tuple(v.shape)]
    if problems:
        raise CheckpointError(f"{source} does not fit this model (was it written for another config?):\n  "
                              + "\n  ".join(sorted(problems)))


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole (unsharded) state dict of ``model`` on CPU, gathered from every rank's shards.

    Collective under FSDP2: every rank must call it; the tensors are returned on rank 0 only (an empty dict on the
    others), so no rank but one holds a second full copy. A plain model returns its own state dict on CPU.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


class DCPCheckpointer(FileCheckpointer):
    """Sharded checkpoints with DCP (see the module docstring): every rank calls ``save``/``load`` together.

    Args:
        directory, keep_last_k, meta: as for :class:`shared.checkpoint.FileCheckpointer` (rank 0 writes ``meta.json``
            and moves the pointers).
        async_save: write the shards in a background thread (``dcp.async_save``): ``save`` returns once the state is
            copied to CPU memory; the folder is committed at the next ``save``, ``load`` or :meth:`wait`. A separate
            gloo process group carries its collectives, so they never interleave with training's.
    """

    def __init__(self, directory: str | Path, keep_last_k: int = 2, meta: dict[str, Any] | None = None,
                 async_save: bool = False) -> None:
        super().__init__(directory, keep_last_k, meta, is_main=_rank() == 0)
        self.async_save = async_save
        self._pending: tuple[Any, tuple] | None = None
        self._group: Any = None

    def save(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *,
             state: dict[str, Any] | None = None, progress: dict[str, Any] | None = None, best: bool = False) -> Path:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        self.wait()
        final = self.dir / f"step-{step:08d}"
        tmp = self.dir / f"{TMP_PREFIX}{final.name}"  # one name on every rank: they all write into it
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        barrier()
        # An optimizer that has not stepped has no state, and get_state_dict would create it by taking a step with
        # zero gradients and lr 0 (torch's _init_optim_state): AdamW's step count would then be 1 ahead and every
        # later update would differ. Such a checkpoint (the step-0 eval's) saves the model only.
        with_optim = optimizer is not None and bool(optimizer.state)
        model_sd, optim_sd = get_state_dict(model, [optimizer] if with_optim else [])
        sd = {"model": model_sd, **({"optim": optim_sd} if with_optim else {})}
        torch.save(state or {}, tmp / f"rank{_rank()}.pt")
        commit = (tmp, final, step, model, progress, best, with_optim)
        if self.async_save:
            if self._group is None and dist.is_initialized():
                self._group = dist.new_group(backend="gloo")
            self._pending = (dcp.async_save(sd, checkpoint_id=str(tmp), process_group=self._group), commit)
        else:
            dcp.save(sd, checkpoint_id=str(tmp))
            self._finish(*commit)
        return final

    def _finish(self, tmp: Path, final: Path, step: int, model: nn.Module, progress: dict[str, Any] | None,
                best: bool, with_optim: bool) -> None:
        barrier()  # every rank's shards are on disk
        if self.is_main:
            world = dist.get_world_size() if dist.is_initialized() else 1
            self._commit(tmp, final, step, model, {"format": "dcp", "world_size": world,
                                                   "optimizer_state": with_optim}, progress, best)
        barrier()  # no rank reads the folder before it is in place

    def wait(self) -> None:
        """Finish an asynchronous save still in flight and commit its folder (every rank calls it)."""
        if self._pending is not None:
            future, commit = self._pending
            self._pending = None
            future.result()
            self._finish(*commit)

    def load(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, which: str = "last",
             expect: dict[str, Any] | None = None) -> Checkpoint | None:
        """Load ``which`` into ``model`` (plain, DDP or FSDP2, with any number of ranks: DCP reshards) and
        ``optimizer`` (left as it is when the checkpoint was saved before the first optimizer step). Each rank
        restores its own ``rank<R>.pt``; a rank the checkpoint did not have (more ranks than at save time) takes
        rank 0's.

        Raises:
            CheckpointError: incomplete folder, another model class/config/tokenizer (``expect``), or other
                parameter names or shapes (each named).
        """
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        self.wait()
        ck = self._open(model, which, expect)
        if ck is None:
            return None
        if ck.meta.get("format") != "dcp":
            raise CheckpointError(f"{ck.path} is a single-file checkpoint, not a distributed one: load it with "
                                  "shared.checkpoint.FileCheckpointer (parallel=none or ddp)")
        # a checkpoint saved before the first optimizer step has no optimizer state: the fresh optimizer stays fresh
        optimizers = [optimizer] if optimizer is not None and ck.meta.get("optimizer_state") else []
        model_sd, optim_sd = get_state_dict(model, optimizers)
        check_keys(ck.path, model_sd)
        sd = {"model": model_sd, **({"optim": optim_sd} if optimizers else {})}
        try:
            dcp.load(sd, checkpoint_id=str(ck.path))
            set_state_dict(model, optimizers, model_state_dict=sd["model"], optim_state_dict=sd.get("optim", {}))
            own = ck.path / f"rank{_rank()}.pt"
            ck.state = torch.load(own if own.is_file() else ck.path / "rank0.pt", map_location="cpu",
                                  weights_only=True)
        except Exception as e:
            raise CheckpointError(f"cannot restore {ck.path}: {e}. {self._fix(ck.path)}") from e
        return ck


def load_sharded_into(model: nn.Module, path: str | Path) -> Checkpoint:
    """Load the weights of the DCP checkpoint folder ``path`` (e.g. ``<run>/checkpoints/best``) into the plain
    ``model`` in THIS process alone (``no_dist``: no collective, so one rank of a running job may call it): the
    export path, followed by :func:`shared.models.hf.save_hf` or :func:`shared.checkpoint.save_weights`. DCP
    reassembles every full tensor from the shards of however many ranks wrote them.

    Raises:
        CheckpointError: not a complete DCP checkpoint, or one of another model (keys and shapes named).
    """
    import torch.distributed.checkpoint as dcp

    path = Path(path)
    ck = FileCheckpointer(path.parent, is_main=False)._open(model, str(path.resolve()), None)
    if ck is None:
        raise CheckpointError(f"checkpoint not found: {path}")
    if ck.meta.get("format") != "dcp":
        raise CheckpointError(f"{ck.path} is a single-file checkpoint, not a distributed one: use "
                              "shared.checkpoint.load_model")
    state = model.state_dict()
    check_keys(ck.path, state)
    sd = {"model": state}
    try:
        dcp.load(sd, checkpoint_id=str(ck.path), no_dist=True)
    except Exception as e:
        raise CheckpointError(f"cannot read the weights of {ck.path}: {e}") from e
    model.load_state_dict(sd["model"])
    return ck
