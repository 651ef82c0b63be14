"""Each measurement of the week is a run: its own folder under ``runs/week11/<profile>/`` (config, environment,
``rows.json``, ``rows.csv``), a line in the results registry, and a ``run_id`` column in every row it produced, so a
CSV in ``docs/weekly-logs/week11/`` names the run (and through it the commit and hardware) it came from.

A finished run is reused as recorded when the week runs again with the same config (its rows keep their run id and
commit); ``fresh=True`` (``runs.fresh=true``) measures again in a new folder.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from shared.atomic import atomic_write_text
from shared.rundir import finish_run, start_run
from shared.tracking import console


@dataclass
class _Key:
    """What names a measurement's run: its config, the models it reads (name → weights hash: a retrained export is a
    new measurement) and, for a fresh measurement, the time."""

    cfg: Any = None
    inputs: dict[str, str] = field(default_factory=dict)
    fresh: str = ""


@dataclass
class Measured:
    """The rows of one measurement and the run that holds them."""

    name: str
    rows: list[dict[str, Any]]
    run_id: str
    git_commit: str
    reused: bool
    seconds: float


def measure(name: str, profile: str, cfg: Any, fn: Callable[[], list[dict[str, Any]]],
            summary: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None, fresh: bool = False,
            inputs: dict[str, str] | None = None) -> Measured:
    """Run ``fn`` (the measurement, returning plain rows) inside the run ``week11/<profile>/<name>-<hash>``, the hash
    of ``cfg`` and ``inputs`` (model name → weights hash), or read its rows back when that run finished before
    (unless ``fresh``: then the time joins the hash, so a new folder opens). ``summary(rows)`` gives the registry's
    headline metrics."""
    tagged = _Key(cfg, dict(inputs or {}), time.strftime("%Y%m%d-%H%M%S") if fresh else "")
    t0 = time.perf_counter()
    with start_run("week11", name, profile, tagged) as run:
        if run.finished:
            recorded = json.loads((run.dir / "result.json").read_text())
            rows = json.loads((run.dir / "rows.json").read_text())
            console(f"week11: {name}: reusing the finished run {run.run_id} (commit {recorded.get('git_commit')})")
            return Measured(name, rows, run.run_id, str(recorded.get("git_commit")), True,
                            float(recorded.get("wall_time_s", 0.0)))
        console(f"week11: {name}: measuring (run {run.run_id})")
        rows = [{**r, "run_id": run.run_id} for r in fn()]
        atomic_write_text(run.dir / "rows.json", json.dumps(rows, indent=1, default=str) + "\n")
        atomic_write_text(run.dir / "rows.csv", pd.DataFrame(rows).to_csv(index=False))
        seconds = time.perf_counter() - t0
        record = finish_run(run, seed=0, metrics=(summary or (lambda r: {"rows": len(r)}))(rows),
                            train_time_s=seconds)
        return Measured(name, rows, run.run_id, str(record.get("git_commit")), False, seconds)
