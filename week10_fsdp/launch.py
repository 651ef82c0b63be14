"""Launch a module under ``torchrun`` (or ``accelerate launch``) as a child job of N processes, from rank 0 of the
week's own job: how one ``make week10`` measures at 1, 2 and 4 ranks. The child gets a clean environment (none of
the parent job's rank or rendezvous variables) and ``--standalone`` (a local rendezvous on a free port)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from shared.paths import REPO_ROOT

# the parent job's launch variables: a child must not inherit them (its own launcher sets fresh ones)
_LAUNCH_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_RANK",
                "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID",
                "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS", "TORCHELASTIC_USE_AGENT_STORE",
                "TORCHELASTIC_ERROR_FILE", "TORCH_NCCL_ASYNC_ERROR_HANDLING", "OMP_NUM_THREADS")


class LaunchError(RuntimeError):
    """A child job failed: the message holds its command, exit status and the end of its output."""


def child_env() -> dict[str, str]:
    """This process's environment without the launch variables of the job it belongs to."""
    return {k: v for k, v in os.environ.items() if k not in _LAUNCH_VARS and not k.startswith(("ACCELERATE_", "FSDP_"))}


def torchrun(nproc: int, target: list[str]) -> list[str]:
    """``torchrun --standalone --nproc-per-node N <target>`` (``target``: ``-m module args`` or ``script args``)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *target]


def accelerate(nproc: int, config_file: Path, target: list[str]) -> list[str]:
    """``accelerate launch --config_file F --num_processes N <target>``: the same script under accelerate's launcher
    (which itself runs torchrun's elastic agent and exports the FSDP settings of ``F``)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file),
            "--num_processes", str(nproc), "--main_process_port", "0", *target]  # 0: a free port, not 29500


def run(cmd: list[str], timeout_s: float, log: Path | None = None) -> tuple[str, float]:
    """Run ``cmd`` from the repository root; returns (its output, seconds).

    Raises:
        LaunchError: non-zero exit or past ``timeout_s`` (the message has the command and the output's tail).
    """
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=REPO_ROOT, env=child_env(), capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as e:
        raise LaunchError(f"`{' '.join(cmd)}` ran past {timeout_s:.0f} s") from e
    out = p.stdout + p.stderr
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(out)
    if p.returncode != 0:
        raise LaunchError(f"`{' '.join(cmd)}` exited with {p.returncode}:\n{out[-3000:]}")
    return out, time.perf_counter() - t0
