"""Checkpoints: one folder per saved step, written atomically, pointed at by ``last`` and ``best``.

``<run>/checkpoints/step-00000200/`` holds ``model.safetensors`` (the weights: safetensors, no pickled code,
https://huggingface.co/docs/safetensors), ``train_state.pt`` (optimizer, scheduler, GradScaler and RNG states, read
with ``torch.load(weights_only=True)``, https://docs.pytorch.org/docs/stable/generated/torch.load.html) and a
human-readable ``meta.json`` (model class and config, tokenizer hash, step, progress, git commit, file sizes).
A save writes all three into a ``.tmp-*`` folder and renames it into place, so weights and meta always change
together; then the ``last`` (and, on a new best, ``best``) symlink is switched atomically, and all but the newest
``keep_last_k`` step folders (and ``best``'s) are removed. A process killed mid-save leaves only a ``.tmp-*``
folder, removed when the next :class:`FileCheckpointer` opens the directory. The weights are the state dict of the
plain module (not of a DDP or ``torch.compile`` wrapper); tied weights are stored once.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT_VERSION = 2
WEIGHTS, STATE, META = "model.safetensors", "train_state.pt", "meta.json"
TMP_PREFIX = ".tmp-"
POINTERS = ("last", "best")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, unreadable, or belongs to another model or tokenizer."""


def model_class_name(module: nn.Module) -> str:
    """The class name a checkpoint records: ``GPT`` for a GPT, also after FSDP2's ``fully_shard`` (which swaps the
    instance's class for a generated ``FSDPGPT`` subclass)."""
    from torch.distributed.fsdp import FSDPModule

    cls = type(module)
    if isinstance(module, FSDPModule):
        cls = next(c for c in cls.__mro__[1:] if not issubclass(c, FSDPModule))
    return cls.__name__


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        else:
            return model


def _tied(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """``{alias: name}`` for state-dict entries that are views of the same memory as an earlier entry."""
    seen: dict[tuple, str] = {}
    aliases = {}
    for name, t in state.items():
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride())
        if key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
    return aliases


def save_weights(model: nn.Module, path: str | Path) -> dict[str, str]:
    """Write the plain module's state dict to ``path`` as safetensors (tied weights once); returns the aliases
    ``{tied name: stored name}`` that :func:`load_weights` needs."""
    from safetensors.torch import save_file

    state = unwrap(model).state_dict()
    aliases = _tied(state)
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items() if k not in aliases}, str(path),
              metadata={"format": "pt"})
    return aliases


def load_weights(model: nn.Module, path: str | Path, aliases: dict[str, str] | None = None,
                 source: str | None = None) -> None:
    """Load a :func:`save_weights` file into ``model``, refusing a checkpoint of another shape.

    Raises:
        CheckpointError: unreadable file, or keys/shapes differ (every mismatch is listed).
    """
    from safetensors.torch import load_file

    source = source or str(path)
    try:
        saved = load_file(str(path))
    except Exception as e:  # a truncated or foreign file: name it, keep the cause
        raise CheckpointError(f"cannot read the weights {path}: {e}") from e
    for alias, name in (aliases or {}).items():
        saved[alias] = saved[name]
    module = unwrap(model)
    own = module.state_dict()
    problems = [f"missing in {source}: {k}" for k in own.keys() - saved.keys()]
    problems += [f"unexpected in {source}: {k}" for k in saved.keys() - own.keys()]
    problems += [f"{k}: {source} has shape {tuple(saved[k].shape)}, model has {tuple(v.shape)}"
                 for k, v in own.items() if k in saved and saved[k].shape != v.shape]
    if problems:
        raise CheckpointError(f"{source} does not fit this model (was it written for another config?):\n  "
                              + "\n  ".join(sorted(problems)))
    module.load_state_dict(saved)


@dataclass
class Checkpoint:
    """A verified checkpoint folder: its ``meta.json`` and, once loaded, its ``train_state.pt``."""

    path: Path
    meta: dict[str, Any]
    state: dict[str, Any] | None = None  # optimizer, scheduler, scaler, rng, extra (after load)

    @property
    def step(self) -> int:
        return int(self.meta["step"])

    @property
    def progress(self) -> dict[str, Any]:
        return self.meta.get("progress", {})


def _mismatch(key: str, saved: Any, wanted: Any) -> str:
    """One line per differing value; for dicts (a model config) only the fields that differ."""
    if isinstance(saved, dict) and isinstance(wanted, dict):
        fields = sorted(k for k in saved.keys() | wanted.keys() if saved.get(k) != wanted.get(k))
        return f"{key}: " + ", ".join(f"{f} is {saved.get(f)!r} in the checkpoint, {wanted.get(f)!r} in this run"
                                      for f in fields)
    return f"{key}: the checkpoint has {saved!r}, this run has {wanted!r}"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Open a checkpoint folder (or a ``last``/``best`` link to one) and check it is complete.

    Raises:
        CheckpointError: the folder or its ``meta.json`` is missing or unreadable, the format is another one, or a
            file's size differs from the one recorded at save time (truncated or damaged).
    """
    path = Path(path)
    meta_file = path / META
    if not meta_file.is_file():
        inside = next((c for c in (path / "checkpoints" / "best", path / "best") if (c / META).is_file()), None)
        hint = f"; a run folder is not a checkpoint: did you mean {inside}?" if inside else ""
        raise CheckpointError(f"checkpoint not found: {path} (no {META}){hint}")
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {meta_file}: {e}") from e
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a checkpoint of format {FORMAT_VERSION} written by shared.checkpoint")
    for name, size in meta["files"].items():
        f = path / name
        actual = f.stat().st_size if f.is_file() else None
        if actual != size:
            raise CheckpointError(f"{f} is {'missing' if actual is None else f'{actual:,} bytes'}, its {META} says "
                                  f"{size:,} bytes: the checkpoint is incomplete or damaged")
    return Checkpoint(path, meta)


def load_model(model: nn.Module, path: str | Path) -> Checkpoint:
    """Load the weights of the checkpoint folder ``path`` into ``model`` (for evaluation: no optimizer state).

    Raises:
        CheckpointError: see :func:`read_checkpoint` and :func:`load_weights`; a distributed (DCP) checkpoint (the
            message names :func:`shared.dcp.load_sharded_into`).
    """
    ck = read_checkpoint(path)
    _refuse_sharded(ck)
    load_weights(model, ck.path / WEIGHTS, ck.meta.get("tied"), str(ck.path))
    return ck


def _refuse_sharded(ck: Checkpoint) -> None:
    if ck.meta.get("format") == "dcp":
        raise CheckpointError(f"{ck.path} is a distributed (DCP) checkpoint of {ck.meta.get('world_size')} rank(s), "
                              "not a single file: resume it with shared.dcp.DCPCheckpointer (parallel=fsdp2), or load "
                              "its weights into a plain model with shared.dcp.load_sharded_into")


class Checkpointer(ABC):
    """Where a training loop saves and resumes. :class:`FileCheckpointer` writes safetensors folders;
    :class:`shared.dcp.DCPCheckpointer` (``torch.distributed.checkpoint``, every rank its shards) implements the
    same methods, and ``wait`` for its asynchronous saves."""

    @abstractmethod
    def save(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *,
             state: dict[str, Any] | None = None, progress: dict[str, Any] | None = None, best: bool = False) -> Path:
        """Save ``step`` (weights, optimizer and the extra tensor ``state``, JSON-able ``progress``); mark it
        ``last`` (and ``best``). Returns the checkpoint's path."""

    @abstractmethod
    def load(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, which: str = "last",
             expect: dict[str, Any] | None = None) -> Checkpoint | None:
        """Load ``which`` (``last``, ``best`` or a path) into ``model`` and ``optimizer``; None when there is none.
        ``expect`` holds meta values the checkpoint must have (e.g. ``tokenizer_sha256``)."""

    @abstractmethod
    def reset(self) -> None:
        """Set the existing checkpoints aside (a run started again from scratch); nothing is deleted."""

    def wait(self) -> None:  # noqa: B027 (a no-op default: only an asynchronous checkpointer overrides it)
        """Finish a save still being written in the background (an asynchronous checkpointer); no-op here."""


class FileCheckpointer(Checkpointer):
    """Checkpoint folders under ``directory`` (see the module docstring).

    Args:
        directory: e.g. ``<run>/checkpoints``.
        keep_last_k: step folders kept (newest first); ``best``'s is always kept too.
        meta: JSON-able description stored in every ``meta.json`` (run id, config, tokenizer hash, commit).
        is_main: only the main process writes (DDP ranks hold identical replicas); every process can load.
    """

    def __init__(self, directory: str | Path, keep_last_k: int = 2, meta: dict[str, Any] | None = None,
                 is_main: bool = True) -> None:
        if keep_last_k < 1:
            raise ValueError(f"keep_last_k must be >= 1, got {keep_last_k}")
        self.dir, self.keep_last_k, self.meta, self.is_main = Path(directory), keep_last_k, meta or {}, is_main
        if is_main and self.dir.is_dir():
            for orphan in self.dir.glob(TMP_PREFIX + "*"):  # left by a process killed mid-save
                if orphan.is_dir() and not orphan.is_symlink():
                    shutil.rmtree(orphan)
                else:
                    orphan.unlink()

    def path(self, which: str) -> Path | None:
        """The folder ``which`` points at (``last``/``best``, a ``step-N`` name, or a path); None if it is absent."""
        p = self.dir / which if which in POINTERS or which.startswith("step-") else Path(which)
        if which in POINTERS and p.is_file() and not p.is_symlink():  # a pointer file where symlinks are unavailable
            p = self.dir / p.read_text().strip()
        if p.is_symlink() and not p.exists():
            raise CheckpointError(f"{self.dir / which} points at {os.readlink(p)}, which does not exist. {self._fix()}")
        return p.resolve() if p.exists() else None

    def steps(self) -> list[Path]:
        """The step folders, oldest first."""
        return sorted(p for p in self.dir.glob("step-*") if p.is_dir())

    def intact(self) -> list[Checkpoint]:
        """Every step folder that verifies (:func:`read_checkpoint`), oldest first."""
        out = []
        for p in self.steps():
            with contextlib.suppress(CheckpointError):
                out.append(read_checkpoint(p))
        return out

    def _point(self, name: str, target: str) -> None:
        link, tmp = self.dir / name, self.dir / f"{TMP_PREFIX}{name}-{os.getpid()}"
        try:
            tmp.unlink(missing_ok=True)
            os.symlink(target, tmp)
        except OSError:  # no symlinks here: a one-line pointer file instead
            tmp.write_text(target + "\n")
        os.replace(tmp, link)

    def save(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *,
             state: dict[str, Any] | None = None, progress: dict[str, Any] | None = None, best: bool = False) -> Path:
        final = self.dir / f"step-{step:08d}"
        if not self.is_main:
            return final
        tmp = self.dir / f"{TMP_PREFIX}{final.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        aliases = save_weights(model, tmp / WEIGHTS)
        torch.save({"optimizer": optimizer.state_dict() if optimizer is not None else None, **(state or {})},
                   tmp / STATE)
        self._commit(tmp, final, step, model, {"tied": aliases}, progress, best)
        return final

    def _commit(self, tmp: Path, final: Path, step: int, model: nn.Module, extra: dict[str, Any],
                progress: dict[str, Any] | None, best: bool) -> None:
        """Write ``meta.json`` (every file's size in ``tmp``) beside the written files, fsync, rename ``tmp`` to
        ``final``, move the pointers, prune. Main process only."""
        module = unwrap(model)
        config = getattr(module, "cfg", None)
        files = sorted(str(f.relative_to(tmp)) for f in tmp.rglob("*") if f.is_file())
        meta = {**self.meta, "format_version": FORMAT_VERSION, "step": step, "model_class": model_class_name(module),
                "model_config": asdict(config) if is_dataclass(config) else self.meta.get("model_config"),
                **extra, "files": {n: (tmp / n).stat().st_size for n in files},
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "progress": progress or {}}
        (tmp / META).write_text(json.dumps(meta, indent=2, default=str) + "\n")
        for f in (*files, META, ""):
            _fsync(tmp / f)
        if final.exists():  # the same step saved again (e.g. a stop, then the eval of that step): swap it out
            old = self.dir / f"{TMP_PREFIX}old-{final.name}-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old)
        else:
            os.replace(tmp, final)
        self._point("last", final.name)
        if best:
            self._point("best", final.name)
        _fsync(self.dir)
        self._prune()

    def _prune(self) -> None:
        keep = {p.name for p in self.steps()[-self.keep_last_k:]}
        keep |= {p.name for w in POINTERS if (p := self.path(w)) is not None}
        for p in self.steps():
            if p.name not in keep:
                shutil.rmtree(p)

    def _fix(self, broken: Path | None = None) -> str:
        others = [c for c in self.intact() if broken is None or c.path != broken.resolve()]
        resume = (f"resume from the newest intact one with `ln -sfn {others[-1].path.name} {self.dir}/last`, or "
                  if others else "")
        return f"Fix: {resume}start the run over with loop.resume=false (the old checkpoints are set aside, not deleted)."

    def load(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, which: str = "last",
             expect: dict[str, Any] | None = None) -> Checkpoint | None:
        """See :meth:`Checkpointer.load`. The model class, its config (when the model has a dataclass ``cfg``) and
        every key of ``expect`` must match the checkpoint's ``meta.json``.

        Raises:
            CheckpointError: incomplete files, another model class/config/tokenizer, or optimizer state that does
                not fit; the message names the checkpoint, the mismatch and the fix.
        """
        ck = self._open(model, which, expect)
        if ck is None:
            return None
        _refuse_sharded(ck)
        load_weights(model, ck.path / WEIGHTS, ck.meta.get("tied"), str(ck.path))
        try:
            ck.state = torch.load(ck.path / STATE, map_location="cpu", weights_only=True)
            if optimizer is not None and ck.state.get("optimizer") is not None:
                optimizer.load_state_dict(ck.state["optimizer"])
        except Exception as e:
            raise CheckpointError(f"cannot restore the training state of {ck.path}: {e}. {self._fix(ck.path)}") from e
        return ck

    def _open(self, model: nn.Module, which: str, expect: dict[str, Any] | None) -> Checkpoint | None:
        """``which`` verified (:func:`read_checkpoint`) and matched against ``model`` and ``expect``; None if absent."""
        path = self.path(which)
        if path is None:
            return None
        try:
            ck = read_checkpoint(path)
        except CheckpointError as e:
            raise CheckpointError(f"{e}. {self._fix(path)}") from e
        module = unwrap(model)
        config = getattr(module, "cfg", None)
        wanted = {"model_class": model_class_name(module), **(expect or {})}
        if is_dataclass(config):
            wanted["model_config"] = asdict(config)
        problems = [_mismatch(k, ck.meta[k], v) for k, v in wanted.items()
                    if ck.meta.get(k) is not None and ck.meta[k] != v]
        if problems:
            raise CheckpointError(f"{ck.path} belongs to another run:\n  " + "\n  ".join(problems) + "\nFix: run "
                                  "with the settings it was written with, or start over with loop.resume=false (the old "
                                  "checkpoints are set aside, not deleted).")
        return ck

    def reset(self) -> None:
        if self.is_main and self.dir.is_dir() and any(self.dir.iterdir()):
            aside = self.dir.with_name(f"{self.dir.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(self.dir, aside)
