"""`make test-week12` must pass with every other week deleted: week 12 reads the other weeks' recorded outputs (the
weekly logs, their CSVs, RESULTS' evidence, the docs) and never imports their code.

:func:`shared.testing.run_week_tests_alone` copies only ``shared/`` and the week, which suits a week that reads
nothing of the others; week 12's subject *is* the others' outputs, so this copy keeps every file of the repository
but the other week packages (and the bulky, regenerable folders: environments, runs, models, datasets, the built site).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from shared.paths import REPO_ROOT
from shared.testing import ISOLATION_TIMEOUT_S

WEEK = "week12_portfolio"
SKIP = {".git", "runs", "models", "datasets", "site", "build", "node_modules", ".pytest_cache", ".ruff_cache"}


@pytest.mark.slow
@pytest.mark.timeout(ISOLATION_TIMEOUT_S + 120)  # the child pytest has its own, generous limit
def test_the_week_s_tests_pass_with_every_other_week_deleted(tmp_path):
    copy = tmp_path / "repo"
    copy.mkdir()
    for item in REPO_ROOT.iterdir():
        other_week = item.name.startswith("week") and item.name != WEEK
        if other_week or item.name in SKIP or item.name.startswith(".venv"):
            continue
        if item.is_dir():
            shutil.copytree(item, copy / item.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(item, copy / item.name)
    assert [p.name for p in copy.iterdir() if p.name.startswith("week")] == [WEEK]
    env = {**os.environ, "PYTHONPATH": str(copy)}
    probe = subprocess.run([sys.executable, "-c", f"import shared, {WEEK}; print({WEEK}.__file__)"],
                           cwd=copy, env=env, capture_output=True, text=True, check=True)
    assert probe.stdout.strip().startswith(str(copy)), "the copy must be imported, not the original checkout"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
                           f"{WEEK}/tests"], cwd=copy, env=env, capture_output=True, text=True,
                          timeout=ISOLATION_TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout
