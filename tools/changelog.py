"""CHANGELOG.md's "CPU log" bullets, generated from the committed weekly logs, and the version tags (``make changelog``).

Each week of the plan is one version (week 1 → v0.1 … week 9 → v0.9, week 10 → v1.0 … week 12 → v1.2). A version's
evidence is its week's CPU log, ``docs/weekly-logs/weekNN.md``, at the latest commit that changed it (the commit that
*holds* the log; the log's own header names the commit it was *generated* at). This script reads that log and writes
the version's bullet, so that no number in the CHANGELOG is typed by hand:

    - CPU log: `docs/weekly-logs/week05.md`, regenerated at <generated> by `<command>` in <wall> s and committed in
      <holding commit>: <the log's verdict line>. Tagged v0.5 there. FAIL: <check> (<measured>); …

and, with ``--tag``, moves each version's tag onto the commit that holds its log (``git tag -f``). A week without a
committed log gets no bullet and no tag; a version with no ``## vX.Y — …`` section in CHANGELOG.md is an error (the
section's prose is written by hand: what the week built; only the bullet is generated).

    python -m tools.changelog            # print each version's bullet and holding commit
    python -m tools.changelog --write    # replace (or append) each section's "- CPU log:" bullet in CHANGELOG.md
    python -m tools.changelog --tag      # git tag -f vX.Y <holding commit> for every version with a log

Raises ``SystemExit`` with a message naming the version when CHANGELOG.md lacks its section.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from tools.logs_status import REPO_ROOT, git, parse_header

WIDTH = 118  # the repository's Markdown line width


def version(week: int) -> str:
    """The plan's version of a week: 1 → ``v0.1`` … 9 → ``v0.9``, 10 → ``v1.0`` … 12 → ``v1.2``."""
    return f"v0.{week}" if week < 10 else f"v1.{week - 10}"


@dataclass
class Entry:
    """One version's evidence: the commit holding its week's log and the bullet quoting that log."""

    week: int
    version: str
    commit: str  # full sha of the latest commit that changed the log
    bullet: str  # one line, unwrapped


def _cells(row: str) -> list[str]:
    """A Markdown table row's cells, with ``\\|`` (an escaped pipe inside a cell) kept as ``|``."""
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", row.strip().strip("|"))]


def failed_checks(log: str) -> list[str]:
    """``"<check> (<measured>)"`` for every row of the log's checks table whose result cell is FAIL."""
    out = []
    for line in log.splitlines():
        if line.startswith("|") and re.search(r"\|\s*FAIL\s*\|\s*$", line):
            cells = _cells(line)
            out.append(f"{cells[0]} ({cells[1]})")
    return out


def bullet(week: int, log: str, holding_commit: str) -> str:
    """The "- CPU log:" bullet for ``week`` from the log's text (header rows ``git commit``, ``command``, ``wall clock
    (s)`` and its ``## Checks:`` verdict line). Raises ``ValueError`` naming the missing part."""
    head = parse_header(log)
    missing = [k for k in ("git commit", "command", "wall clock (s)") if not head.get(k)]
    verdict = re.search(r"^## Checks: (.*)$", log, re.M)
    if missing or not verdict:
        raise ValueError(f"week{week:02d}'s log lacks {', '.join(missing) or 'its ## Checks: line'}: regenerate it")
    generated = head["git commit"].split()[0][:7]
    text = (f"- CPU log: `docs/weekly-logs/week{week:02d}.md`, regenerated at {generated} by `{head['command']}` in "
            f"{float(head['wall clock (s)']):,.0f} s and committed in {holding_commit[:7]}: {verdict.group(1)}. "
            f"Tagged {version(week)} there.")
    fails = failed_checks(log)
    return text + (" FAIL: " + "; ".join(fails) + "." if fails else "")


def entries(repo: Path, rev: str = "HEAD", weeks: range = range(1, 13)) -> list[Entry]:
    """Every week with a committed CPU log at ``rev``: its holding commit and bullet."""
    out = []
    for w in weeks:
        path = f"docs/weekly-logs/week{w:02d}.md"
        commit = git(repo, "log", "-1", "--format=%H", rev, "--", path).strip()
        if commit:
            out.append(Entry(w, version(w), commit, bullet(w, git(repo, "show", f"{commit}:{path}"), commit)))
    return out


def rewrite(changelog: str, items: list[Entry]) -> str:
    """``changelog`` with each version's ``- CPU log:`` bullet replaced by the generated one (wrapped at 118
    characters), or appended to the section when it has none. Raises ``SystemExit`` for a version without a section."""
    for e in items:
        sec = re.search(rf"^## {re.escape(e.version)} — .*?(?=^## |\Z)", changelog, re.M | re.S)
        if not sec:
            raise SystemExit(f"error: CHANGELOG.md has no '## {e.version} — …' section for week {e.week}: add one "
                             "(what the week built), then run this again")
        body = sec.group(0)
        wrapped = textwrap.fill(e.bullet, WIDTH, subsequent_indent="  ", break_long_words=False,
                                break_on_hyphens=False)
        old = re.search(r"^- CPU log:.*?(?=^- |^## |\n\n|\Z)", body, re.M | re.S)
        new = (body[:old.start()] + wrapped + "\n" + body[old.end():] if old
               else body.rstrip("\n") + "\n" + wrapped + "\n\n")
        changelog = changelog[:sec.start()] + new + changelog[sec.end():]
    return re.sub(r"\n{3,}", "\n\n", changelog)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", type=Path, default=REPO_ROOT)
    p.add_argument("--write", action="store_true", help="rewrite CHANGELOG.md's CPU-log bullets")
    p.add_argument("--tag", action="store_true", help="move each version's tag onto the commit holding its log")
    a = p.parse_args(argv)
    try:
        items = entries(a.repo)
    except ValueError as err:  # a log without the rows its bullet quotes
        raise SystemExit(f"error: {err}") from None
    for e in items:
        print(f"{e.version}  {e.commit[:7]}  {e.bullet}")
    if a.write:
        path = a.repo / "CHANGELOG.md"
        path.write_text(rewrite(path.read_text(), items))
        print(f"rewrote {len(items)} bullets in {path}")
    if a.tag:
        for e in items:
            git(a.repo, "tag", "-f", e.version, e.commit)
        print(f"tagged {len(items)} versions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
