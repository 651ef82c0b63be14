"""The results registry: one JSON line per finished run in ``runs/registry.jsonl``.

Every number in a weekly log or results table should trace back to a line here (run id, git
commit, config hash, seed, hardware, wall time, final metrics).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from shared.paths import runs_root


def registry_path() -> Path:
    """``<runs root>/registry.jsonl``."""
    return runs_root() / "registry.jsonl"


def append_run(record: dict[str, Any], path: Path | None = None) -> None:
    """Append one run record as a single line (one ``write`` on an ``O_APPEND`` file)."""
    path = path or registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True, default=str) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_runs(path: Path | None = None, **match: Any) -> list[dict[str, Any]]:
    """All records (optionally those whose fields equal ``match``), oldest first."""
    path = path or registry_path()
    if not path.is_file():
        return []
    runs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in runs if all(r.get(k) == v for k, v in match.items())]
