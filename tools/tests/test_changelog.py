"""tools/changelog.py on a temporary git repository: bullets quote each log at the commit holding it, tags move."""

import pytest

from tools.changelog import bullet, entries, failed_checks, main, rewrite, version
from tools.tests.gitrepo import commit, git

CHANGELOG = """# Changelog

## v0.2 — week 2: two
- built two.
- CPU log: an old bullet
  wrapped over two lines.

## v0.1 — week 1: one
- built one.
"""


def _log(generated_at: str, verdict: str, rows: str = "", wall: str = "61.4") -> str:
    """A log shaped like shared.report.WeeklyLog's: header table, verdict line, checks table."""
    return (f"# Week\n\n_Generated; do not edit._\n\n|  | value |\n|:--|:--|\n"
            f"| command | `python -m weekxx --profile cpu` |\n| git commit | {generated_at[:12]} |\n"
            f"| wall clock (s) | {wall} |\n\n## Checks: {verdict}\n\n| check | measured | criterion | result |\n"
            f"|:--|:--|:--|:--|\n| a | 1 | ≥ 1 | PASS |\n{rows}")


@pytest.fixture
def repo(tmp_path):
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q")
    code = commit(r, {"CHANGELOG.md": CHANGELOG, "x.py": "x = 1\n"})
    commit(r, {"docs/weekly-logs/week01.md": _log(code, "2 PASS, 0 SKIP, 0 FAIL (of 2)")}, "week01 log")
    fail_row = "| speed \\| fast | 0.98 MB/s (\\|Δ\\| small) | ≥ 1 MB/s | FAIL |\n"
    commit(r, {"docs/weekly-logs/week02.md": _log(code, "1 PASS, 0 SKIP, 1 FAIL (of 2)", fail_row, "1234.5")},
           "week02 log")
    commit(r, {"README.md": "later, no log changed\n"})
    return r


def test_versions_follow_the_plan():
    assert [version(w) for w in (1, 9, 10, 12)] == ["v0.1", "v0.9", "v1.0", "v1.2"]


def test_failed_checks_name_check_and_measurement_with_escaped_pipes():
    log = _log("abc", "1 FAIL", "| speed \\| fast | 0.98 MB/s | ≥ 1 | FAIL |\n| ok | 3 | ≥ 1 | PASS |\n")
    assert failed_checks(log) == ["speed | fast (0.98 MB/s)"]
    assert failed_checks(_log("abc", "1 PASS")) == []


def test_entries_quote_each_log_at_the_commit_holding_it(repo):
    by_version = {e.version: e for e in entries(repo)}
    assert set(by_version) == {"v0.1", "v0.2"}  # weeks 3..12 have no log: no entry
    holding = git(repo, "log", "-1", "--format=%H", "--", "docs/weekly-logs/week02.md")
    generated = git(repo, "rev-list", "--max-parents=0", "HEAD")
    e = by_version["v0.2"]
    assert e.commit == holding != git(repo, "rev-parse", "HEAD")
    assert e.bullet == (f"- CPU log: `docs/weekly-logs/week02.md`, regenerated at {generated[:7]} by "
                        f"`python -m weekxx --profile cpu` in 1,234 s and committed in {holding[:7]}: 1 PASS, 0 SKIP, "
                        "1 FAIL (of 2). Tagged v0.2 there. FAIL: speed | fast (0.98 MB/s (|Δ| small)).")
    assert "FAIL:" not in by_version["v0.1"].bullet


def test_bullet_names_what_a_log_lacks():
    with pytest.raises(ValueError, match="week03's log lacks wall clock"):
        bullet(3, _log("abc", "1 PASS").replace("| wall clock (s) | 61.4 |\n", ""), "f" * 40)
    with pytest.raises(ValueError, match="## Checks:"):
        bullet(3, _log("abc", "1 PASS").replace("## Checks: 1 PASS", "## Results"), "f" * 40)


def test_rewrite_replaces_an_old_bullet_appends_a_missing_one_and_is_idempotent(repo):
    items = entries(repo)
    once = rewrite(CHANGELOG, items)
    assert "an old bullet" not in once
    assert "wrapped over two lines" not in once
    assert once.count("- CPU log:") == 2
    v01 = once[once.index("## v0.1"):]
    assert v01.startswith("## v0.1 — week 1: one\n- built one.\n- CPU log:")  # appended after the hand-written prose
    assert all(len(line) <= 118 for line in once.splitlines())
    assert rewrite(once, items) == once


def test_rewrite_refuses_a_version_without_its_section(repo):
    with pytest.raises(SystemExit, match="no '## v0.2 — …' section for week 2"):
        rewrite(CHANGELOG.replace("## v0.2 — week 2: two", "## v9.9 — other"), entries(repo))


def test_main_names_a_log_without_its_verdict(repo):
    commit(repo, {"docs/weekly-logs/week03.md": "# Week 3\n\nno header, no verdict\n"}, "a broken log")
    with pytest.raises(SystemExit, match="error: week03's log lacks git commit, command, wall clock"):
        main(["--repo", str(repo)])


def test_main_writes_and_tags_on_the_holding_commits(repo, capsys):
    assert main(["--repo", str(repo), "--write", "--tag"]) == 0
    assert "rewrote 2 bullets" in capsys.readouterr().out
    for week, version_ in ((1, "v0.1"), (2, "v0.2")):
        holding = git(repo, "log", "-1", "--format=%H", "--", f"docs/weekly-logs/week{week:02d}.md")
        assert git(repo, "rev-list", "-n", "1", version_) == holding
    assert "Tagged v0.2 there." in (repo / "CHANGELOG.md").read_text()
