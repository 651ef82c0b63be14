"""The drill (``week12_portfolio.drill``, through the names it re-exports from ``drill_markers`` and ``drill_venv``):
commands read from a REPRODUCE.md's markers, and whole drills on tiny git repositories whose REPRODUCE.md runs
``echo``/``true``/``false``: the times, the stop at the first failure with its output, the known-issue fix,
``drill_completed``, the environment steps see, and ``--venv`` reuse that leaves the reused environment unchanged. The
real repository's smoke drill runs in CI's `make week12 PROFILE=smoke` (its drill stage), not twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from week12_portfolio import drill
from week12_portfolio.drill import DrillError, DrillResult, Step

GIT = ["git", "-c", "user.name=drill-test", "-c", "user.email=drill@example.invalid", "-c", "init.defaultBranch=main"]


def reproduce(setup: str = "echo set-up done", quick: str = "true", extra: str = "") -> str:
    """A REPRODUCE.md with the smoke profile's two sections (``setup``, ``quick``) and one known issue."""
    return f"""# Fixture

Some prose, and a block the drill must ignore:

```bash
echo not marked
```

<!-- drill: setup -->
```bash
{setup}
```

<!-- drill: quick -->
```bash
{quick}
```
{extra}
<!-- drill: issues -->
| the output says | fix |
|---|---|
| `disk is full` | free some space |
"""


def make_repo(root: Path, text: str, files: dict[str, str] | None = None) -> Path:
    """A committed git repository at ``root`` holding ``REPRODUCE.md`` = ``text`` and ``files``."""
    root.mkdir(parents=True)
    (root / "REPRODUCE.md").write_text(text)
    for name, body in (files or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(body)
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "fixture"]):
        subprocess.run([*GIT, *args], cwd=root, check=True, capture_output=True)
    return root


def quiet_drill(repo: Path, tmp_path: Path, **kw) -> DrillResult:
    kw.setdefault("profile", "smoke")
    return drill.run_drill(repo, workdir=tmp_path, echo=lambda _: None, **kw)


# ---- reading the commands -----------------------------------------------------------------------------------------


def test_extract_sections_reads_marked_blocks_only():
    text = reproduce(setup="make install   # creates .venv\n\n# a comment line\nmake data",
                     quick="make a \\\n  ARG=1\nmake b",
                     extra="\n<!-- drill: quick -->\n\n```bash\nmake c\n```\n")
    sections = drill.extract_sections(text)
    assert sections == {"setup": ["make install   # creates .venv", "make data"],
                        "quick": ["make a ARG=1", "make b", "make c"]}
    assert drill.drill_commands(text, "smoke") == [("setup", "make install   # creates .venv"), ("setup", "make data"),
                                                   ("quick", "make a ARG=1"), ("quick", "make b"), ("quick", "make c")]
    assert drill.known_issues(text) == [("disk is full", "free some space")]


def test_indented_blocks_in_a_list_are_read():
    text = "1. Set up:\n\n   <!-- drill: setup -->\n   ```bash\n   make install\n   ```\n"
    assert drill.extract_sections(text) == {"setup": ["make install"]}


def test_missing_section_names_the_marker_and_the_profile():
    text = reproduce()
    with pytest.raises(DrillError, match=r"no `<!-- drill: test -->` block \(the cpu profile runs"):
        drill.drill_commands(text, "cpu")
    with pytest.raises(DrillError, match="unknown drill profile 'gpu'"):
        drill.drill_commands(text, "gpu")


@pytest.mark.parametrize(("text", "message"), [
    ("<!-- drill: setup -->\nmake install\n", r"REPRODUCE.md:1: .* not followed by a ```bash block"),
    ("<!-- drill: setup -->\n```python\nprint(1)\n```\n", r"not followed by a ```bash block"),
    ("<!-- drill: setup -->\n```bash\nmake install\n", r"REPRODUCE.md:2: .* never closed"),
    ("<!-- drill: setup -->\n```bash\n# only a comment\n\n```\n", r"holds no command"),
    ("<!-- drill: issues -->\nno table here\n", r"not followed by a table"),
])
def test_malformed_markers_are_clear_errors(text, message):
    read = drill.known_issues if "issues" in text else drill.extract_sections
    with pytest.raises(DrillError, match=message):
        read(text)


def test_display_drops_only_a_real_comment():
    assert drill.display("make week01   # runs week 1") == "make week01"
    assert drill.display("echo 'a # b'  # c") == "echo 'a # b'"
    assert drill.display("echo a#b") == "echo a#b"


@pytest.mark.usefixtures("whole_repository")
def test_the_repository_reproduce_marks_both_profiles():
    text = (Path(__file__).resolve().parents[2] / "REPRODUCE.md").read_text()
    smoke = [(s, drill.display(c)) for s, c in drill.drill_commands(text, "smoke")]
    cpu = [(s, drill.display(c)) for s, c in drill.drill_commands(text, "cpu")]
    assert smoke == [("setup", "make install"), ("quick", "make test-week01"), ("quick", "make week01 PROFILE=smoke")]
    assert ("test", "make test") in cpu
    assert ("cpu", "make week01 PROFILE=cpu") in cpu
    weeks = sorted(p.name[4:6] for p in Path(__file__).resolve().parents[2].glob("week[0-9][0-9]_*/"))
    assert [c for s, c in cpu if s == "smoke"] == [f"make week{w} PROFILE=smoke" for w in weeks]
    assert drill.known_issues(text), "REPRODUCE.md records no known issue"


# ---- whole drills on fixture repositories -------------------------------------------------------------------------


def test_failing_step_stops_the_drill_and_is_reported(tmp_path):
    repo = make_repo(tmp_path / "src", reproduce(quick="sleep 0.3\necho about to fail; echo disk is full >&2; false\n"
                                                      "echo never"))
    result = quiet_drill(repo, tmp_path)
    assert [(s.section, s.status) for s in result.steps] == [
        ("drill", "PASS"), ("drill", "PASS"), ("setup", "PASS"), ("quick", "PASS"), ("quick", "FAIL")]
    assert result.planned == 6
    assert result.not_run == ["echo never"]
    assert result.steps[3].seconds >= 0.3
    failed = result.steps[4]
    assert failed.returncode == 1
    assert "about to fail" in failed.output
    assert "disk is full" in failed.output
    assert not drill.drill_completed(result)
    assert not result.passed
    assert len(result.issues) == 1
    assert "free some space" in result.issues[0]
    log = drill.render_log(result)
    assert "**not completed**: step 5 (`echo about to fail; echo disk is full >&2; false`) failed (exit status 1)" in log
    assert "| 5 | quick | `echo about to fail; echo disk is full >&2; false` |" in log
    assert "| FAIL |" in log
    assert "about to fail" in log.split("## Failures")[1]
    assert "Not run after the failure: `echo never`." in log
    assert not any(tmp_path.glob("aifs-drill-*")), "the temporary folder is deleted without --keep"


def test_all_true_drill_completes(tmp_path):
    repo = make_repo(tmp_path / "src", reproduce(quick="true\necho fine"))
    result = quiet_drill(repo, tmp_path, keep=True)
    assert drill.drill_completed(result)
    assert result.passed
    assert len(result.steps) == result.planned == 5
    assert all(s.returncode == 0 for s in result.steps)
    assert result.issues == []
    assert result.seconds >= sum(s.seconds for s in result.steps)
    log = drill.render_log(result)
    assert "**completed**: all 5 steps ran and exited 0" in log
    assert "None: the drill completed" in log
    clone = next(tmp_path.glob("aifs-drill-*")) / "src"
    assert (clone / "REPRODUCE.md").read_text() == (repo / "REPRODUCE.md").read_text()


def test_unknown_failure_has_no_recorded_fix(tmp_path):
    repo = make_repo(tmp_path / "src", reproduce(setup="exit 3"))
    result = quiet_drill(repo, tmp_path)
    assert result.steps[-1].returncode == 3
    assert result.not_run == ["true"]
    assert "no recorded fix" in result.issues[0]


def test_reproduce_without_markers_is_a_failed_step(tmp_path):
    repo = make_repo(tmp_path / "src", "# nothing marked\n")
    result = quiet_drill(repo, tmp_path)
    assert result.planned is None
    assert not drill.drill_completed(result)
    assert result.steps[-1].status == "FAIL"
    assert "<!-- drill: setup -->" in result.steps[-1].output


def test_step_timeout_stops_the_step(tmp_path):
    repo = make_repo(tmp_path / "src", reproduce(quick="sleep 30"))
    result = quiet_drill(repo, tmp_path, step_timeout_s=0.5)
    last = result.steps[-1]
    assert last.returncode is None
    assert last.status == "FAIL"
    assert last.seconds < 15
    assert "timeout after" in drill.render_log(result)


def test_a_step_that_waits_for_input_fails(tmp_path):
    repo = make_repo(tmp_path / "src", reproduce(quick="read -r answer"))
    result = quiet_drill(repo, tmp_path, step_timeout_s=20)
    assert result.steps[-1].returncode == 1
    assert not result.passed


def test_dirty_tree_is_refused_unless_allowed(tmp_path):
    repo = make_repo(tmp_path / "src", reproduce())
    (repo / "new.txt").write_text("uncommitted")
    with pytest.raises(DrillError, match="1 uncommitted path.*new.txt.*--allow-dirty"):
        quiet_drill(repo, tmp_path)
    result = quiet_drill(repo, tmp_path, allow_dirty=True)
    assert result.passed
    assert "1 uncommitted path(s) there are not in the clone" in result.environment["repository"]
    with pytest.raises(DrillError, match="not in a git repository"):
        quiet_drill(tmp_path, tmp_path)


def test_steps_see_the_mirror_but_not_the_callers_venv(tmp_path, monkeypatch):
    monkeypatch.setenv("AIFS_DATA_MIRROR", "/some/mirror")
    monkeypatch.setenv("VIRTUAL_ENV", "/caller/.venv")
    monkeypatch.setenv("PATH", "/caller/.venv/bin" + os.pathsep + os.environ["PATH"])
    monkeypatch.setenv("MAKEFLAGS", "-j8")
    quick = ('test "$AIFS_DATA_MIRROR" = /some/mirror\ntest -z "${VIRTUAL_ENV:-}" -a -z "${MAKEFLAGS:-}"\n'
             'case ":$PATH:" in *:/caller/.venv/bin:*) exit 9;; esac\ntest "$AIFS_DRILL" = 1\ntest "$(pwd)" = "$(git rev-parse --show-toplevel)"')
    result = quiet_drill(make_repo(tmp_path / "src", reproduce(quick=quick)), tmp_path)
    assert result.passed, result.steps[-1].output
    assert "VIRTUAL_ENV" in result.environment["removed from the steps' environment"]


def test_step_environment_is_pure():
    env, removed = drill.step_environment({"PATH": "/v/bin:/usr/bin", "VIRTUAL_ENV": "/v", "PYTHONPATH": "x",
                                           "AIFS_DATA_MIRROR": "/m"})
    assert env == {"PATH": "/usr/bin", "AIFS_DATA_MIRROR": "/m", "AIFS_DRILL": "1"}
    assert removed == ["/v/bin from PATH", "VIRTUAL_ENV", "PYTHONPATH"]


@pytest.mark.parametrize(("steps", "planned", "not_run", "expected"), [
    ([0, 0, 0], 3, [], True),
    ([0, 0, 1], 3, [], False),
    ([0, 0, None], 3, [], False),
    ([0, 0], 3, [], False),
    ([0, 0], None, [], False),
    ([0, 0], 2, ["make test"], False),
    ([], 0, [], True),
])
def test_drill_completed(steps, planned, not_run, expected):
    result = DrillResult("smoke", "drill", planned=planned, not_run=not_run,
                         steps=[Step("quick", f"cmd{i}", 0.1, rc) for i, rc in enumerate(steps)])
    assert drill.drill_completed(result) is expected


def test_main_writes_the_log_and_json(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("AIFS_DRILL", raising=False)
    repo = make_repo(tmp_path / "src", reproduce(quick="false"))
    out, js = tmp_path / "log" / "reproduction-log.md", tmp_path / "r.json"
    rc = drill.main(["--profile", "smoke", "--repo", str(repo), "--out", str(out), "--json", str(js),
                     "--workdir", str(tmp_path)])
    assert rc == 1
    assert "NOT completed" in capsys.readouterr().out
    assert "--profile smoke" in out.read_text()
    assert json.loads(js.read_text())["passed"] is False
    monkeypatch.setenv("AIFS_DRILL", "1")
    assert drill.main(["--repo", str(repo), "--out", str(out)]) == 2
    monkeypatch.delenv("AIFS_DRILL")
    assert drill.main(["--repo", str(tmp_path / "missing"), "--out", str(out)]) == 2


# ---- --venv: reuse an installed environment without changing it ---------------------------------------------------


def test_reused_venv_runs_the_clones_code_and_stays_unchanged(tmp_path):
    caller = tmp_path / "caller-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(caller)], check=True)
    purelib = Path(json.loads(subprocess.run(
        [str(caller / "bin" / "python"), "-c", "import json, sysconfig; print(json.dumps(sysconfig.get_paths()))"],
        capture_output=True, text=True, check=True).stdout)["purelib"])
    (purelib / "probe_dep.py").write_text("VALUE = 42\n")
    (purelib / "probe_dep-1.0.dist-info").mkdir()
    (purelib / "probe_dep-1.0.dist-info" / "RECORD").write_text("probe_dep.py,,\n")
    src = tmp_path / "src"
    # the caller's editable installs of the project point at the source checkout: left out of the clone's .venv
    (purelib / "__editable__.probe_project-0.1.pth").write_text("import os\n")
    (purelib / "probe-dev.pth").write_text(str(src) + "\n")
    (caller / "bin" / "probe-tool").write_text(f"#!{caller}/bin/python\nimport probe_pkg, sys\n"
                                               "print(probe_pkg.__file__)\n")
    (caller / "bin" / "probe-tool").chmod(0o755)
    before = drill.venv_fingerprint(purelib)
    makefile = ".venv/.installed: pyproject.toml\n\techo would install; exit 7\ninstall: .venv/.installed\n"
    quick = ('.venv/bin/python -c "import probe_dep, probe_pkg, os; assert probe_dep.VALUE == 42; '
             'assert probe_pkg.__file__.startswith(os.getcwd())"\n'
             '.venv/bin/probe-tool | grep -q "$(pwd)/probe_pkg"\n'
             '! .venv/bin/python -c "import only_in_source"')
    repo = make_repo(src, reproduce(setup="make install", quick=quick),
                     files={"Makefile": makefile, "pyproject.toml": "[project]\nname = 'probe-project'\n",
                            "probe_pkg/__init__.py": ""})
    (src / "only_in_source.py").write_text("")  # uncommitted: importable only through the editable install
    result = quiet_drill(repo, tmp_path, venv=caller, allow_dirty=True)
    assert result.passed, [s.output for s in result.steps if not s.ok]
    assert result.planned == 8
    assert result.steps[-1].command.startswith("check that")
    assert "__editable__.probe_project-0.1.pth, probe-dev.pth" in result.setup
    assert "1 console scripts" in result.setup
    assert drill.venv_fingerprint(purelib) == before


def test_a_changed_venv_fails_the_check(tmp_path):
    caller = tmp_path / "caller-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(caller)], check=True)
    purelib = next(caller.glob("lib/python*/site-packages"))
    quick = f"mkdir {purelib}/intruder-1.0.dist-info && touch {purelib}/intruder-1.0.dist-info/RECORD"
    repo = make_repo(tmp_path / "src", reproduce(quick=quick))
    result = quiet_drill(repo, tmp_path, venv=caller)
    assert result.steps[-1].status == "FAIL"
    assert "changed during the drill" in result.steps[-1].output
    assert not result.passed


def test_venv_without_python_is_a_failed_step(tmp_path):
    repo = make_repo(tmp_path / "src", reproduce())
    result = quiet_drill(repo, tmp_path, venv=tmp_path / "nowhere")
    assert result.steps[-1].status == "FAIL"
    assert "has no bin/python" in result.steps[-1].output
    assert result.not_run == ["echo set-up done", "true"]
    assert not result.passed


# ---- the real repository --------------------------------------------------------------------------------------------
