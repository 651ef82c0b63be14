"""tools/logs_status.py on a temporary git repository with fake weeks and fake logs."""

from pathlib import Path

import pytest

from tools import logs_status
from tools.logs_status import collect, is_code_change, main, parse_header, render_markdown, replace_block
from tools.tests.gitrepo import commit as _commit
from tools.tests.gitrepo import git as _git


def _log(commit: str, profile: str = "cpu", hardware: str = "CPU (2 cores)", dirty: bool = False) -> str:
    """A log whose header looks like shared.report.WeeklyLog.header's."""
    return (f"# Week\n\n_Generated; do not edit._\n\n|  | value |\n|:--|:--|\n| generated | 2026-12-01 10:00:00 UTC |\n"
            f"| command | `python -m weekxx --profile {profile}` |\n| profile | **{profile}** |\n"
            f"| hardware | {hardware} |\n| git commit | {commit[:12]}{' (dirty)' if dirty else ''} |\n\n"
            f"## Checks: 1 PASS\n\n| check | result |\n|:--|:--|\n| git commit | not a header row |\n")


@pytest.fixture
def repo(tmp_path):
    """Two weeks and shared/ at commit C; both CPU logs generated at C and committed in the next commit."""
    r = tmp_path / "repo"
    r.mkdir()
    _git(r, "init", "-q")
    code = _commit(r, {"shared/core.py": "x = 1\n", "week01_a/__init__.py": "", "week01_a/main.py": "a = 1\n",
                       "week02_b/__init__.py": "", "week02_b/main.py": "b = 1\n", "README.md": "readme\n"})
    _commit(r, {"docs/weekly-logs/week01.md": _log(code), "docs/weekly-logs/week02.md": _log(code)}, "logs")
    return r


def _status(repo: Path) -> dict[tuple[str, str], logs_status.LogStatus]:
    return {(s.week, s.kind): s for s in collect(repo)}


def test_fresh_logs_are_fresh_and_exit_0(repo, capsys):
    st = _status(repo)
    assert st["week01", "cpu"].fresh
    assert st["week01", "cpu"].later_commits == 0
    assert st["week01", "cpu"].hardware == "CPU (2 cores)"
    assert st["week01", "cpu"].profile == "cpu"
    assert st["week01", "gpu"].status == "none"  # no GPU reference yet: listed, not a failure
    assert main(["--repo", str(repo)]) == 0
    assert "every CPU log is fresh" in capsys.readouterr().out


def test_a_later_commit_to_shared_makes_every_log_stale_and_exits_1(repo, capsys):
    _commit(repo, {"shared/core.py": "x = 2\n"})
    st = _status(repo)
    assert st["week01", "cpu"].status == st["week02", "cpu"].status == "STALE"
    assert st["week01", "cpu"].later_commits == 1
    assert main(["--repo", str(repo)]) == 1
    assert "2 stale CPU log(s): week01, week02" in capsys.readouterr().out


def test_a_commit_to_another_week_or_to_tests_and_docs_only_leaves_a_log_fresh(repo):
    _commit(repo, {"week02_b/main.py": "b = 2\n"})
    _commit(repo, {"shared/tests/test_core.py": "def test(): pass\n", "week01_a/README.md": "notes\n",
                   "README.md": "more\n", "pyproject.toml": "[tool.x]\n"})
    st = _status(repo)
    assert st["week01", "cpu"].fresh
    assert st["week02", "cpu"].later_commits == 1
    assert not st["week02", "cpu"].fresh
    assert main(["--repo", str(repo)]) == 1  # week02's log is stale


def test_the_rule_counts_code_configs_and_pins_not_tests_or_docs():
    assert is_code_change("week01_a/configs/base.yaml", "week01_a")
    assert is_code_change("shared/train/loop.py", "week01_a")
    assert is_code_change("requirements/constraints.txt", "week01_a")
    assert not is_code_change("requirements/docs.txt", "week01_a")  # the docs site's toolchain only
    assert not is_code_change("week01_a/tests/test_x.py", "week01_a")
    assert not is_code_change("shared/tests/expected/loss.json", "week01_a")
    assert not is_code_change("shared/README.md", "week01_a")
    assert not is_code_change("week02_b/main.py", "week01_a")
    assert not is_code_change("pyproject.toml", "week01_a")


def test_a_stale_gpu_reference_is_listed_with_its_age_and_never_fails(repo, capsys):
    gpu_at = _git(repo, "rev-parse", "HEAD")
    _commit(repo, {"docs/weekly-logs/gpu/week01.md": _log(gpu_at, "gpu", "1x NVIDIA H100 80GB HBM3 (79.2 GiB)")})
    _commit(repo, {"week01_a/main.py": "a = 2\n"})
    _commit(repo, {"docs/weekly-logs/week01.md": _log(_git(repo, "rev-parse", "HEAD"))})  # the CPU log redone
    st = _status(repo)
    assert st["week01", "cpu"].fresh
    assert st["week01", "gpu"].status == "behind"
    assert st["week01", "gpu"].later_commits == 1
    assert main(["--repo", str(repo)]) == 0
    out = capsys.readouterr().out
    gpu_table = out[out.index("GPU reference logs"):]
    assert "H100" in gpu_table
    assert "behind (1 later code commit)" in gpu_table
    assert "2026-12-01" in gpu_table


def test_a_week_without_its_cpu_log_is_missing_and_exits_1(repo, capsys):
    _commit(repo, {"week03_c/__init__.py": "", "week03_c/main.py": "c = 1\n"})
    _commit(repo, {"docs/weekly-logs/week01.md": _log(_git(repo, "rev-parse", "HEAD")),
                   "docs/weekly-logs/week02.md": _log(_git(repo, "rev-parse", "HEAD"))})
    assert _status(repo)["week03", "cpu"].status == "MISSING"
    assert main(["--repo", str(repo)]) == 1
    assert "1 stale CPU log(s): week03" in capsys.readouterr().out


def test_a_log_from_a_dirty_tree_or_an_unknown_commit_is_stale(repo):
    head = _git(repo, "rev-parse", "HEAD")
    _commit(repo, {"docs/weekly-logs/week01.md": _log(head, dirty=True),
                   "docs/weekly-logs/week02.md": _log("0123456789ab")})
    st = _status(repo)
    assert st["week01", "cpu"].later_commits == 0
    assert st["week01", "cpu"].status == "STALE"
    assert st["week01", "cpu"].reason == "generated from a dirty tree"
    assert st["week02", "cpu"].later_commits is None
    assert "not in this repository" in st["week02", "cpu"].reason
    assert main(["--repo", str(repo)]) == 1


def test_header_parsing_reads_only_the_first_table():
    head = parse_header(_log("abcdef123456", dirty=True))
    assert head["git commit"] == "abcdef123456 (dirty)"
    assert head["profile"] == "cpu"  # the bold markup stripped
    assert head["command"] == "python -m weekxx --profile cpu"


def test_markdown_and_write_readme_replace_only_the_marked_block(repo):
    md = render_markdown(collect(repo))
    assert md.splitlines()[2].startswith("| 01 | [week01.md](docs/weekly-logs/week01.md): fresh; checks 1 PASS; CPU (2 cores)")
    readme = repo / "README.md"
    readme.write_text(f"intro\n{logs_status.README_BEGIN}\nold table\n{logs_status.README_END}\noutro\n")
    assert main(["--repo", str(repo), "--write-readme"]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n")
    assert text.endswith("outro\n")
    assert "old table" not in text
    assert md in text
    with pytest.raises(ValueError, match="logs-status:begin"):
        replace_block("no markers here", md)
