"""Where the project keeps things on disk.

Every path can be moved with an environment variable so that tests and CI can redirect
artefacts into a temporary folder without touching the repository.

| what                     | default                  | variable          |
|--------------------------|--------------------------|-------------------|
| verified dataset cache   | ``<repo>/datasets/raw``  | ``AIFS_DATA_ROOT``|
| run directories          | ``<repo>/runs``          | ``AIFS_RUNS_ROOT``|
| exported models          | ``<repo>/models``        | ``AIFS_MODELS_ROOT`` |
| weekly logs              | ``<repo>/docs/weekly-logs`` | ``AIFS_LOGS_ROOT`` |
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _env_path(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    return Path(value).expanduser().resolve() if value else default


def data_root() -> Path:
    """Folder of verified raw dataset files (``datasets/raw`` by default)."""
    return _env_path("AIFS_DATA_ROOT", REPO_ROOT / "datasets" / "raw")


def runs_root() -> Path:
    """Folder holding one sub-folder per run, plus ``registry.jsonl``."""
    return _env_path("AIFS_RUNS_ROOT", REPO_ROOT / "runs")


def models_root() -> Path:
    """Folder for exported model artefacts (tokenizers, final weights)."""
    return _env_path("AIFS_MODELS_ROOT", REPO_ROOT / "models")


def logs_root() -> Path:
    """Folder of the generated weekly logs (``docs/weekly-logs``)."""
    return _env_path("AIFS_LOGS_ROOT", REPO_ROOT / "docs" / "weekly-logs")
