"""The CHANGELOG stage against a real git repository: which versions are tagged, and on a commit holding the log."""

from __future__ import annotations

import subprocess

from week12_portfolio import checks, portfolio
from week12_portfolio.portfolio import VERSIONS, WeekResults, changelog_stage


def _git(repo, *args):
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=repo, check=True,
                   capture_output=True)


def test_tags_on_commits_with_and_without_the_weeks_log(tmp_path, monkeypatch):
    _git(tmp_path, "init", "-q")
    logs = tmp_path / "docs" / "weekly-logs"
    logs.mkdir(parents=True)
    (tmp_path / "CHANGELOG.md").write_text("".join(f"## {v} — week {i + 1}: x\n" for i, v in enumerate(VERSIONS)))
    (tmp_path / "README.md").write_text("no log here\n")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "no logs yet")
    _git(tmp_path, "tag", "v0.2")  # week 2's tag on a commit without week 2's log
    (logs / "week01.md").write_text("# Week 01\n")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "week01 log")
    _git(tmp_path, "tag", "v0.1")
    monkeypatch.setattr(portfolio, "REPO_ROOT", tmp_path)

    res = WeekResults(profile="cpu")
    changelog_stage(res)
    by = {v["version"]: v for v in res.changelog["versions"]}
    assert by["v0.1"]["tagged"]
    assert by["v0.1"]["has_log"]
    assert by["v0.2"]["tagged"]
    assert not by["v0.2"]["has_log"]
    assert not by["v0.3"]["tagged"]
    assert res.changelog["own"] == VERSIONS[-1] == "v1.2"
    check = checks.changelog_tagged(res.changelog["versions"], res.changelog["expected"], res.changelog["own"])
    assert check.failed
    assert "tag without the week's log v0.2" in check.measured
