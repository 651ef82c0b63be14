"""Checkpoints: one ``.pt`` file (weights, optimizer, scheduler, RNG, progress) + a ``.meta.json``.

Writes are atomic (temp file + rename), loads are safe (``torch.load(weights_only=True)``, which
refuses arbitrary pickled code: https://docs.pytorch.org/docs/stable/generated/torch.load.html).
The model's state dict is saved from the uncompiled, unwrapped module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shared.atomic import atomic_path, atomic_write_text

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or belongs to another model."""


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / ``torch.compile`` wrappers."""
    while True:
        if hasattr(model, "module"):  # DistributedDataParallel
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        else:
            return model


def meta_path(path: Path) -> Path:
    """``last.pt`` -> ``last.meta.json``."""
    return path.with_suffix(".meta.json")


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    *,
    progress: dict[str, Any] | None = None,
    rng: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Atomically write a checkpoint and its human-readable ``.meta.json``.

    Args:
        path: target file, e.g. ``run/checkpoints/last.pt``.
        progress: counters needed to resume (step, epoch, batch in epoch, best metric, ...).
        rng: RNG snapshot from :func:`shared.repro.rng_state`.
        meta: JSON-serialisable description (config, metrics); also stored in the ``.pt``.
    """
    path = Path(path)
    module = unwrap(model)
    state = {
        "format_version": FORMAT_VERSION,
        "model_class": type(module).__name__,
        "model": module.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "progress": progress or {},
        "rng": rng,
        "meta_json": json.dumps(meta or {}, default=str),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    shapes = {k: list(v.shape) for k, v in module.state_dict().items()}
    info = {"model_class": state["model_class"], "progress": state["progress"], "param_shapes": shapes, **(meta or {})}
    atomic_write_text(meta_path(path), json.dumps(info, indent=2, default=str) + "\n")
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely (tensors and plain containers only).

    Raises:
        CheckpointError: the file is missing or cannot be read as a checkpoint of this format.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a truncated or foreign file: name it, keep the cause
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a checkpoint of format {FORMAT_VERSION} written by shared.checkpoint")
    state["meta"] = json.loads(state.pop("meta_json"))
    return state


def load_model_state(model: nn.Module, state: dict[str, Any], source: str = "checkpoint") -> None:
    """Load ``state["model"]`` into ``model``, refusing a checkpoint of another shape or class.

    Raises:
        CheckpointError: class differs, or keys/shapes differ (every mismatch is listed).
    """
    module = unwrap(model)
    if state.get("model_class") not in (None, type(module).__name__):
        raise CheckpointError(
            f"{source} holds a {state['model_class']}, but the model is a {type(module).__name__}. "
            "Point to a checkpoint of this model or change model.name."
        )
    own = module.state_dict()
    saved = state["model"]
    problems = [f"missing in {source}: {k}" for k in own.keys() - saved.keys()]
    problems += [f"unexpected in {source}: {k}" for k in saved.keys() - own.keys()]
    problems += [
        f"{k}: {source} has shape {tuple(saved[k].shape)}, model has {tuple(v.shape)}"
        for k, v in own.items()
        if k in saved and saved[k].shape != v.shape
    ]
    if problems:
        raise CheckpointError(
            f"{source} does not fit this model (was it written for another config?):\n  " + "\n  ".join(sorted(problems))
        )
    module.load_state_dict(saved)
