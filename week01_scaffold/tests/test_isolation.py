"""`make test-week01` must pass with every other week deleted (weeks depend only on shared/)."""

import os
import shutil
import subprocess
import sys

import pytest

from shared.paths import REPO_ROOT

CHILD = "AIFS_ISOLATION_CHILD"


@pytest.mark.slow
def test_week01_tests_pass_with_every_other_week_deleted(tmp_path):
    if os.environ.get(CHILD):
        pytest.skip("already inside the isolated copy (this test does not recurse)")
    copy = tmp_path / "repo"
    keep = {"shared", "week01_scaffold", "conftest.py", "pyproject.toml", "Makefile", "requirements"}
    copy.mkdir()
    for item in REPO_ROOT.iterdir():
        if item.name in keep:
            dst = copy / item.name
            if item.is_dir():
                shutil.copytree(item, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(item, dst)
    assert not any(p.name.startswith("week") and p.name != "week01_scaffold" for p in copy.iterdir())
    env = {**os.environ, CHILD: "1", "PYTHONPATH": str(copy)}
    probe = subprocess.run([sys.executable, "-c", "import shared, week01_scaffold; print(shared.__file__)"],
                           cwd=copy, env=env, capture_output=True, text=True, check=True)
    assert probe.stdout.strip().startswith(str(copy)), "the copy must be imported, not the original checkout"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "week01_scaffold/tests"],
                          cwd=copy, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout
