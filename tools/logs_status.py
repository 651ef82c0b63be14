"""Which committed weekly logs are older than the code they were generated from (``make logs-status``).

A weekly log names, in its header table, the commit it was generated at (``git commit`` row, ``(dirty)`` when the
tree had uncommitted changes). This script reads every committed log,

- CPU logs ``docs/weekly-logs/weekNN.md`` (``make logs`` regenerates them), and
- GPU reference logs ``docs/weekly-logs/gpu/weekNN.md`` (``make gpu-refs``),

and counts the later commits, ``git rev-list <log commit>..HEAD``, that changed code the log depends on.

The rule (what counts as a code change for week NN's log): a commit that changed at least one file

- under the week's package ``weekNN_*/`` or under ``shared/``, whose name ends in ``.py``, ``.yaml`` or ``.yml``
  (code and configs), and that is not inside a ``tests/`` folder (tests do not change what a week computes); or
- under ``requirements/`` (the pinned versions: another torch can change every number), except
  ``requirements/docs.txt``: the docs-site toolchain (MkDocs), which no week imports.

Not counted: docs and READMEs (``*.md``), tests and their expected files, other weeks, ``pyproject.toml`` (its
dependency list is unpinned; it changes for markers, lint rules and each new week, not for what a week computes),
the Makefile and tools/.

Status: ``fresh`` (0 later code commits, clean tree), else ``STALE`` (code changed since, the log was generated
from a dirty tree, or its commit is unknown to this repository); a week package without a CPU log is ``MISSING``,
which counts as stale. Exit status 1 when any CPU log is stale or missing, else 0. GPU reference logs are listed
in a table of their own with their age (later code commits, date) and never change the exit status: they are
regenerated only when a GPU is lent.

    python tools/logs_status.py                  # the two tables; exit 1 if a CPU log is stale
    python tools/logs_status.py --markdown       # the README's table of logs (exit 0)
    python tools/logs_status.py --write-readme   # rewrite that table between the README's markers (exit 0)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
LOGS = Path("docs/weekly-logs")
CODE_SUFFIXES = (".py", ".yaml", ".yml")
ALWAYS_COUNTED = ("requirements/",)
NEVER_COUNTED = ("requirements/docs.txt",)  # the docs site's toolchain: builds pages, computes no week's numbers
README_BEGIN, README_END = "<!-- logs-status:begin -->", "<!-- logs-status:end -->"


@dataclass
class LogStatus:
    """One committed log (or the absence of one) and how it stands against HEAD."""

    week: str  # "week01"
    kind: str  # "cpu" | "gpu"
    path: str  # relative to the repository
    exists: bool
    profile: str = ""
    hardware: str = ""
    generated: str = ""
    commit: str = ""  # as written in the header, without "(dirty)"
    dirty: bool = False
    later_commits: int | None = None  # None: the commit is unknown here
    checks: str = ""  # the log's own verdict line, e.g. "11 PASS, 0 SKIP, 1 FAIL (of 12)"

    @property
    def fresh(self) -> bool:
        return self.exists and not self.dirty and self.later_commits == 0

    @property
    def status(self) -> str:
        if not self.exists:
            return "MISSING" if self.kind == "cpu" else "none"
        if self.fresh:
            return "fresh"
        return "STALE" if self.kind == "cpu" else "behind"

    @property
    def reason(self) -> str:
        """Why a log is not fresh, in a few words ("" when it is)."""
        if not self.exists:
            return "no log"
        why = []
        if self.dirty:
            why.append("generated from a dirty tree")
        if self.later_commits is None:
            why.append(f"commit {self.commit or '?'} not in this repository")
        elif self.later_commits:
            why.append(f"{self.later_commits} later code commit{'s' * (self.later_commits != 1)}")
        return ", ".join(why)


def git(repo: Path, *args: str) -> str:
    """Output of ``git -C repo args`` (raises ``CalledProcessError`` on failure)."""
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def parse_header(text: str) -> dict[str, str]:
    """The key/value rows of a log's header table (the first table of the file), markup stripped."""
    rows: dict[str, str] = {}
    for line in text.splitlines():
        if not line.startswith("|"):
            if rows:
                break  # the header table ended
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or set(cells[0]) <= set(":- "):
            continue
        rows[cells[0]] = "|".join(cells[1:]).strip().strip("*`").strip()
    return rows


def week_packages(repo: Path) -> dict[str, str]:
    """``{"week01": "week01_scaffold", ...}``: every ``weekNN_*`` package at the repository root."""
    out = {}
    for d in sorted(repo.glob("week[0-9][0-9]_*")):
        if d.is_dir() and (d / "__init__.py").is_file():
            out.setdefault(d.name[:6], d.name)
    return out


def is_code_change(path: str, week_pkg: str) -> bool:
    """Whether a changed file counts against week ``week_pkg``'s logs (the rule in the module docstring)."""
    if path in NEVER_COUNTED:
        return False
    if path.startswith(ALWAYS_COUNTED):
        return True
    if not path.startswith((f"{week_pkg}/", "shared/")):
        return False
    return path.endswith(CODE_SUFFIXES) and "tests" not in Path(path).parts[:-1]


def later_code_commits(repo: Path, commit: str, week_pkg: str) -> int | None:
    """Commits in ``commit..HEAD`` that changed code of ``week_pkg`` (see :func:`is_code_change`); None when
    ``commit`` is not a commit of this repository."""
    try:
        full = git(repo, "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}").strip()
    except subprocess.CalledProcessError:
        return None
    out = git(repo, "log", "--format=@%H", "--name-only", "--no-renames", f"{full}..HEAD", "--",
              f"{week_pkg}/", "shared/", *ALWAYS_COUNTED)
    counted, current, hit = 0, None, False
    for line in [*out.splitlines(), "@end"]:
        if line.startswith("@"):
            counted += hit
            current, hit = line[1:], False
        elif line and current and is_code_change(line, week_pkg):
            hit = True
    return counted


def read_log(repo: Path, rel: Path, week: str, kind: str, week_pkg: str) -> LogStatus:
    """The status of one log file (which need not exist)."""
    path = repo / rel
    if not path.is_file():
        return LogStatus(week, kind, rel.as_posix(), exists=False)
    head = parse_header(path.read_text(encoding="utf-8"))
    commit_cell = head.get("git commit", "")
    commit = commit_cell.split()[0] if commit_cell.split() else ""
    text = path.read_text(encoding="utf-8")
    verdict = next((line.removeprefix("## Checks:").strip() for line in text.splitlines()
                    if line.startswith("## Checks:")), "")
    st = LogStatus(week, kind, rel.as_posix(), exists=True, profile=head.get("profile", ""),
                   hardware=head.get("hardware", ""), generated=head.get("generated", ""), commit=commit,
                   dirty="(dirty)" in commit_cell, checks=verdict)
    if commit and commit != "unknown":
        st.later_commits = later_code_commits(repo, commit, week_pkg)
    return st


def collect(repo: Path = REPO_ROOT) -> list[LogStatus]:
    """Every week package's CPU log and GPU reference log, plus any log whose week package is gone."""
    pkgs = week_packages(repo)
    logs = repo / LOGS
    weeks = set(pkgs) | {p.stem for d in (logs, logs / "gpu") for p in d.glob("week[0-9][0-9].md")}
    rows = []
    for week in sorted(weeks):
        pkg = pkgs.get(week, f"{week}_")  # no package: nothing of it can change, only shared/
        rows.append(read_log(repo, LOGS / f"{week}.md", week, "cpu", pkg))
        rows.append(read_log(repo, LOGS / "gpu" / f"{week}.md", week, "gpu", pkg))
    return rows


def _text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths)),
                      *(fmt.format(*map(str, r)) for r in rows)])


def _commit_cell(s: LogStatus) -> str:
    return f"{s.commit}{' (dirty)' if s.dirty else ''}" if s.exists else "-"


def _count_cell(s: LogStatus) -> str:
    return "-" if not s.exists else ("?" if s.later_commits is None else str(s.later_commits))


def render_text(rows: list[LogStatus]) -> str:
    """The CPU table (these decide the exit status), then the GPU reference logs with their age."""
    header = ["week", "kind", "profile", "hardware", "log commit", "later code commits", "status", "checks"]
    cpu = [[s.week, s.kind, s.profile or "-", s.hardware or "-", _commit_cell(s), _count_cell(s),
            s.status + (f" ({s.reason})" if not s.fresh else ""), s.checks or "-"] for s in rows if s.kind == "cpu"]
    gpu = [[s.week, s.kind, s.profile or "-", s.hardware or "-", _commit_cell(s), _count_cell(s),
            s.generated or "-", s.status + (f" ({s.reason})" if s.exists and not s.fresh else ""), s.checks or "-"]
           for s in rows if s.kind == "gpu"]
    stale = [s.week for s in rows if s.kind == "cpu" and not s.fresh]
    out = ["CPU logs (make logs regenerates them; a stale or missing one fails this check)",
           _text_table(header, cpu), "",
           "GPU reference logs (make gpu-refs on a lent GPU; listed with their age, never fail this check)",
           _text_table([*header[:-2], "generated", "status", "checks"], gpu), "",
           f"{len(stale)} stale CPU log(s): {', '.join(stale)}" if stale else "every CPU log is fresh"]
    return "\n".join(out)


def _md_cell(s: LogStatus, repo_prefix: str) -> str:
    if not s.exists:
        return "**missing**" if s.kind == "cpu" else "not yet run"
    link = f"[{Path(s.path).relative_to(LOGS).as_posix()}]({repo_prefix}{s.path})"
    state = "fresh" if s.fresh else ("**STALE**" if s.kind == "cpu" else "older than the code")
    why = f" ({s.reason})" if not s.fresh else ""
    date = f", {s.generated.split()[0]}" if s.kind == "gpu" and s.generated else ""
    checks = f"; checks {s.checks}" if s.checks else ""
    return f"{link}: {state}{why}{checks}; {s.hardware}{date}, `{_commit_cell(s)}`"


def render_markdown(rows: list[LogStatus], repo_prefix: str = "") -> str:
    """One row per week: its CPU log and its GPU reference log, each with hardware, commit and state."""
    by_week: dict[str, dict[str, LogStatus]] = {}
    for s in rows:
        by_week.setdefault(s.week, {})[s.kind] = s
    lines = ["| week | CPU log (`make logs`) | GPU reference log (`make gpu-refs`) |", "|---|---|---|"]
    for week, kinds in sorted(by_week.items()):
        lines.append(f"| {week[4:]} | {_md_cell(kinds['cpu'], repo_prefix)} | {_md_cell(kinds['gpu'], repo_prefix)} |")
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    """``text`` with everything between the README markers replaced by ``block``.

    Raises:
        ValueError: the markers are missing or out of order.
    """
    pattern = re.compile(re.escape(README_BEGIN) + r".*?" + re.escape(README_END), re.S)
    if not pattern.search(text):
        raise ValueError(f"no {README_BEGIN} ... {README_END} block in the README")
    return pattern.sub(lambda _: f"{README_BEGIN}\n{block}\n{README_END}", text, count=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="logs_status", description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=REPO_ROOT, help="the git checkout (default: this one)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--markdown", action="store_true", help="print the README's table of logs")
    group.add_argument("--write-readme", action="store_true", help="rewrite that table in README.md")
    args = parser.parse_args(argv)
    rows = collect(args.repo)
    if args.markdown:
        print(render_markdown(rows))
        return 0
    if args.write_readme:
        readme = args.repo / "README.md"
        readme.write_text(replace_block(readme.read_text(encoding="utf-8"), render_markdown(rows)), encoding="utf-8")
        print(f"rewrote the logs table in {readme}")
        return 0
    print(render_text(rows))
    return 1 if any(s.kind == "cpu" and not s.fresh for s in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
