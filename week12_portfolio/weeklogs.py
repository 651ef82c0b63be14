"""Read the committed weekly logs (``docs/weekly-logs/weekNN.md``) as data: the header's facts, the verdict line and
every check row. Week 12 reads the other weeks' *outputs* this way, never their code."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from shared.paths import REPO_ROOT

LOGS = Path("docs/weekly-logs")
_CELL = re.compile(r"(?<!\\)\|")  # a cell boundary: a pipe not escaped as \|
_VERDICT = re.compile(r"^## Checks: (\d+) PASS, (\d+) SKIP, (\d+) FAIL \(of (\d+)\)", re.M)


class WeekLogError(ValueError):
    """A weekly log is missing or not in the format :class:`shared.report.WeeklyLog` writes."""


@dataclass(frozen=True)
class CheckRow:
    """One row of a log's checks table."""

    name: str
    measured: str
    criterion: str
    result: str  # PASS | SKIP | FAIL


@dataclass
class WeekLog:
    """A weekly log as data."""

    week: str  # "week05"
    path: str  # repository-relative
    title: str
    header: dict[str, str] = field(default_factory=dict)  # "git commit", "hardware", "generated", "wall clock (s)"...
    checks: list[CheckRow] = field(default_factory=list)
    counts: tuple[int, int, int, int] = (0, 0, 0, 0)  # PASS, SKIP, FAIL, total

    @property
    def verdict(self) -> str:
        p, s, f, n = self.counts
        return f"{p} PASS, {s} SKIP, {f} FAIL (of {n})"


def cells(line: str) -> list[str]:
    """The cells of a Markdown table row, ``\\|`` unescaped."""
    parts = _CELL.split(line.strip())
    return [c.strip().replace("\\|", "|") for c in parts[1:-1]]


def _table_after(lines: list[str], start: int) -> list[list[str]]:
    rows, i = [], start
    while i < len(lines) and not lines[i].startswith("|"):
        i += 1
    while i < len(lines) and lines[i].startswith("|"):
        if not re.match(r"^\|[\s:|-]+\|$", lines[i]):
            rows.append(cells(lines[i]))
        i += 1
    return rows


def parse_log(text: str, week: str, path: str = "") -> WeekLog:
    """A log's title, header, verdict and check rows.

    Raises:
        WeekLogError: no ``# `` title, or no ``## Checks:`` verdict line, or a check table whose row count differs
            from the verdict's total.
    """
    lines = text.splitlines()
    title = next((ln[2:].strip() for ln in lines if ln.startswith("# ")), None)
    if title is None:
        raise WeekLogError(f"{path or week}: no '# ' title line: not a weekly log")
    header = {r[0]: r[1] for r in _table_after(lines, 0)[1:] if len(r) >= 2}
    m = _VERDICT.search(text)
    if m is None:
        raise WeekLogError(f"{path or week}: no '## Checks: N PASS, N SKIP, N FAIL (of N)' line")
    at = text[:m.start()].count("\n")
    rows = _table_after(lines, at + 1)[1:]
    # name first, result last; a log written before shared.report escaped "|" may split "|Δ|" into extra cells
    checks = [CheckRow(r[0], " | ".join(r[1:-2]), r[-2], r[-1]) for r in rows if len(r) >= 4]
    counts = tuple(int(g) for g in m.groups())
    if len(checks) != counts[3]:
        raise WeekLogError(f"{path or week}: the verdict counts {counts[3]} checks, the table has {len(checks)}")
    return WeekLog(week, path, title, header, checks, counts)  # type: ignore[arg-type]


def read_log(week: str, root: Path = REPO_ROOT, gpu: bool = False) -> WeekLog | None:
    """``docs/weekly-logs/[gpu/]weekNN.md`` parsed, or None when there is none."""
    rel = LOGS / ("gpu" if gpu else "") / f"{week}.md"
    path = root / rel
    return parse_log(path.read_text(encoding="utf-8"), week, str(rel)) if path.is_file() else None


def week_names(root: Path = REPO_ROOT) -> list[str]:
    """``["week01", ...]``: the weeks with a committed CPU log (``docs/weekly-logs/weekNN.md``). Week 12 reads the
    other weeks' recorded outputs, never their packages, so it works with those packages deleted; a package without
    a log is ``make logs-status``'s concern (MISSING)."""
    return sorted(p.stem for p in (root / LOGS).glob("week[0-9][0-9].md"))
