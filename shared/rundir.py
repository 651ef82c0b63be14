"""Run directories: ``runs/<week>/<profile>/<name>-<config hash>/`` with config.yaml, env.json and a lock.

The directory name includes the config hash, so re-running the same command finds the same directory and resumes
(or, when it finished, reuses) the run; changing any value starts a new one. While a run is open its directory is
locked (``fcntl.flock`` on ``.lock``, released when the run closes or its process ends), so a second identical run
started at the same time stops with a message naming the running one instead of training into the same folder.
A finished run is registered once (:func:`finish_run` is idempotent).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from shared.atomic import atomic_write_text, remove_orphans
from shared.config import config_hash, save_config, to_dict
from shared.paths import runs_root
from shared.repro import environment, hardware_summary
from shared.results import append_run

LOCK = ".lock"
RESULT = "result.json"


class RunLockedError(RuntimeError):
    """Another process is running the same run (same directory) right now."""


def _is_main_rank() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


@dataclass
class Run:
    """An open run: where it lives and what it is. Close it (or use it as a context manager) to release the lock."""

    week: str
    name: str
    profile: str
    cfg: Any
    dir: Path
    run_id: str
    config_hash: str
    env: dict[str, Any]
    started: float = field(default_factory=time.perf_counter)
    lock: IO | None = None

    @property
    def finished(self) -> bool:
        """True when the run has a ``result.json`` (it trained to the end and was registered)."""
        return (self.dir / RESULT).is_file()

    def close(self) -> None:
        """Release the directory lock (idempotent)."""
        if self.lock is not None:
            self.lock.close()  # closing the file drops the flock
            self.lock = None

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _lock(run_dir: Path) -> IO:
    """Hold an exclusive lock on ``run_dir/.lock`` and write who holds it into the file.

    Raises:
        RunLockedError: another process holds it; the message names it (pid, host, command, start time).
    """
    f = open(run_dir / LOCK, "a+")  # noqa: SIM115 (held for the run's lifetime)
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "an unknown process"
        f.close()
        raise RunLockedError(f"{run_dir} is in use by {holder}. Wait for that run to finish (running the same command "
                             "afterwards resumes or reuses it), or stop it, or change a config value to start "
                             "another run.") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}: "
            f"{' '.join(sys.argv)}\n")
    f.flush()
    return f


def run_path(week: str, name: str, profile: str, cfg: Any, root: Path | None = None) -> Path:
    """The directory :func:`start_run` opens for this run (``<runs root>/<week>/<profile>/<name>-<config hash>``)."""
    return (root or runs_root()) / week / profile / f"{name}-{config_hash(cfg)}"


def start_run(week: str, name: str, profile: str, cfg: Any, root: Path | None = None) -> Run:
    """Create (or reopen) the run directory, lock it, remove files left half-written by a killed process, and write
    ``config.yaml`` and ``env.json``: on the main rank only (the ranks of a DDP run share one run and its folder).

    Raises:
        RunLockedError: another process is running this run.
    """
    h = config_hash(cfg)
    run_dir = run_path(week, name, profile, cfg, root)
    env = environment()
    lock = None
    if _is_main_rank():  # the main rank owns the folder; the other ranks of a DDP run only read from it
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = _lock(run_dir)
        remove_orphans(run_dir)
        save_config(cfg, run_dir / "config.yaml")
        atomic_write_text(run_dir / "env.json", json.dumps(env, indent=2) + "\n")
    return Run(week, name, profile, cfg, run_dir, f"{week}/{profile}/{name}-{h}", h, env, lock=lock)


def finish_run(run: Run, seed: int, metrics: dict[str, Any], train_time_s: float) -> dict[str, Any]:
    """Write ``result.json`` and append the run to the results registry, once: a run that already has its
    ``result.json`` (a finished run reused by a re-run) is returned as recorded, and the registry is not touched."""
    if run.finished:
        return json.loads((run.dir / RESULT).read_text())
    record = {
        "run_id": run.run_id,
        "week": run.week,
        "name": run.name,
        "profile": run.profile,
        "git_commit": run.env.get("git_commit"),
        "git_dirty": run.env.get("git_dirty"),
        "config_hash": run.config_hash,
        "seed": seed,
        "hardware": hardware_summary(run.env),
        "wall_time_s": round(time.perf_counter() - run.started, 3),
        "train_time_s": round(train_time_s, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "metrics": metrics,
        "config": to_dict(run.cfg),
    }
    atomic_write_text(run.dir / RESULT, json.dumps(record, indent=2, default=str) + "\n")
    append_run(record)
    return record
