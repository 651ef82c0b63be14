"""Reproducibility: seeding, deterministic mode, and a record of the environment a run used."""

from __future__ import annotations

import os
import platform
import random
import subprocess
import sys
from typing import Any

import numpy as np
import torch

from shared.paths import REPO_ROOT


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy, and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds all CUDA devices


def set_deterministic(enabled: bool = True) -> None:
    """Switch torch to deterministic kernels (or back).

    Sets ``torch.use_deterministic_algorithms``, the cuDNN flags, and ``CUBLAS_WORKSPACE_CONFIG``
    (required by cuBLAS for deterministic matmuls, see
    https://docs.pytorch.org/docs/stable/notes/randomness.html). Deterministic mode can be slower.
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=False)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


def rng_state() -> dict[str, Any]:
    """Snapshot of every RNG a run uses, in types ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore a snapshot made by :func:`rng_state` (its tensors may sit on any device)."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _driver_version() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        )
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def _env_flag(var: str) -> bool | None:
    """``1`` -> True, ``0`` -> False, unset or anything else -> None (unknown)."""
    return {"1": True, "0": False}.get(os.environ.get(var, ""))


def environment() -> dict[str, Any]:
    """Describe the machine and software a run used (written as ``env.json``).

    Keys: os, python, torch, cuda, cudnn, driver, gpus (name and memory in GiB), cpu_count,
    git_commit, git_dirty, hostname.
    """
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append({"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1)})
    commit = _git("rev-parse", "HEAD")
    # Dirty = the source differs from the commit. The generated weekly logs do not count: a week
    # rewrites its own log while it runs, and that must not mark its own run as dirty.
    status = _git("status", "--porcelain", "--", ".", ":(exclude)docs/weekly-logs") if commit else None
    return {
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "driver": _driver_version() if gpus else None,
        "gpus": gpus,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        # A copy without .git (e.g. a tree shipped to a GPU box) can name its commit via AIFS_GIT_COMMIT, and
        # whether the copy differs from it via AIFS_GIT_DIRTY=1/0 (tools/gpu_refs.py checks the files).
        "git_commit": commit or os.environ.get("AIFS_GIT_COMMIT"),
        "git_dirty": bool(status) if status is not None else (None if commit else _env_flag("AIFS_GIT_DIRTY")),
        "hostname": platform.node(),
    }


def hardware_summary(env: dict[str, Any]) -> str:
    """One line such as ``"1x NVIDIA H100 80GB HBM3 (79.1 GiB)"`` or ``"CPU (2 cores)"``."""
    if env.get("gpus"):
        names = {g["name"] for g in env["gpus"]}
        mem = env["gpus"][0]["memory_gib"]
        return f"{len(env['gpus'])}x {', '.join(sorted(names))} ({mem} GiB)"
    return f"CPU ({env.get('cpu_count')} cores)"
