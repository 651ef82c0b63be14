"""Run directories: ``runs/<week>/<profile>/<name>-<config hash>/`` with config.yaml and env.json.

The directory name includes the config hash, so re-running the same command finds the same
directory and resumes (or, when it finished, reuses) the run; changing any value starts a new one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.atomic import atomic_write_text
from shared.config import config_hash, save_config, to_dict
from shared.paths import runs_root
from shared.repro import environment, hardware_summary
from shared.results import append_run


@dataclass
class Run:
    """An open run: where it lives and what it is."""

    week: str
    name: str
    profile: str
    cfg: Any
    dir: Path
    run_id: str
    config_hash: str
    env: dict[str, Any]
    started: float = field(default_factory=time.perf_counter)


def start_run(week: str, name: str, profile: str, cfg: Any, root: Path | None = None) -> Run:
    """Create (or reopen) the run directory and write ``config.yaml`` and ``env.json`` into it."""
    h = config_hash(cfg)
    run_dir = (root or runs_root()) / week / profile / f"{name}-{h}"
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    env = environment()
    atomic_write_text(run_dir / "env.json", json.dumps(env, indent=2) + "\n")
    return Run(week, name, profile, cfg, run_dir, f"{week}/{profile}/{name}-{h}", h, env)


def finish_run(run: Run, seed: int, metrics: dict[str, Any], train_time_s: float) -> dict[str, Any]:
    """Write ``result.json`` and append the run to the results registry; return the record."""
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
    atomic_write_text(run.dir / "result.json", json.dumps(record, indent=2, default=str) + "\n")
    append_run(record)
    return record
