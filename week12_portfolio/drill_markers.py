"""Reading REPRODUCE.md's drill markers (:mod:`week12_portfolio.drill`): which commands a profile runs, and the
known issues with their fixes. Pure functions of the text; :class:`DrillError` is the drill's one error.

**Markers.** A fenced ```bash block on the line after an HTML comment ``<!-- drill: NAME -->`` belongs to section
NAME; several blocks of one NAME are read in file order. Each non-blank line that is not a ``#`` comment is one step
(a line ending in a backslash continues on the next), run with ``bash -c 'set -euo pipefail; ...'`` in the clone's
root, a fresh shell per step. :data:`PROFILES` names the sections a profile runs: ``smoke`` (CI) = ``setup`` +
``quick``; ``cpu`` = ``setup`` + ``test`` + ``smoke`` + ``cpu``. ``<!-- drill: issues -->`` above a markdown table
``| the output says | fix |`` records the known failures (the first cell's text in backticks is looked for in a
failed step's output).
"""

from __future__ import annotations

import re

PROFILES: dict[str, tuple[str, ...]] = {"smoke": ("setup", "quick"), "cpu": ("setup", "test", "smoke", "cpu")}
ISSUES = "issues"  # the marker of the known-issues table, not a section of commands
REPRODUCE = "REPRODUCE.md"
_MARKER = re.compile(r"^\s*<!--\s*drill:\s*([A-Za-z0-9_-]+)\s*-->\s*$")


class DrillError(Exception):
    """The drill cannot start or cannot read its commands; the message names the cause and the fix."""


# ---- REPRODUCE.md: the marked commands and the known issues ------------------------------------------------------


def _next_content(lines: list[str], i: int) -> int:
    while i < len(lines) and not lines[i].strip():
        i += 1
    return i


def _commands(body: list[str]) -> list[str]:
    out: list[str] = []
    pending = ""
    for raw in body:
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        out.append(pending + line)
        pending = ""
    if pending.strip():
        out.append(pending.strip())
    return out


def extract_sections(text: str, source: str = REPRODUCE) -> dict[str, list[str]]:
    """The commands of every marked block of ``text``: ``{section: [command, ...]}``, blocks of one section joined
    in file order. Raises :class:`DrillError` (naming ``source`` and the line) for a marker not followed by a
    fenced bash block, a block never closed, or a block without a command."""
    lines = text.splitlines()
    sections: dict[str, list[str]] = {}
    i = 0
    while i < len(lines):
        m = _MARKER.match(lines[i])
        if not m:
            i += 1
            continue
        name, marker_line = m.group(1), i + 1
        j = _next_content(lines, i + 1)
        if name == ISSUES:
            i = j
            continue
        fence = lines[j].strip() if j < len(lines) else ""
        if not fence.startswith("```") or fence[3:].strip() not in ("bash", "sh"):
            raise DrillError(f"{source}:{marker_line}: the marker `<!-- drill: {name} -->` is not followed by a "
                             f"```bash block (found {fence[:40]!r}); put the commands in one right below it")
        k = j + 1
        while k < len(lines) and lines[k].strip() != "```":
            k += 1
        if k >= len(lines):
            raise DrillError(f"{source}:{j + 1}: the ```bash block of `<!-- drill: {name} -->` is never closed; "
                             "end it with a line holding only ```")
        commands = _commands(lines[j + 1:k])
        if not commands:
            raise DrillError(f"{source}:{j + 1}: the block of `<!-- drill: {name} -->` holds no command (only blank "
                             "lines and comments); add its commands or remove the marker")
        sections.setdefault(name, []).extend(commands)
        i = k + 1
    return sections


def drill_commands(text: str, profile: str, source: str = REPRODUCE) -> list[tuple[str, str]]:
    """``[(section, command), ...]`` that ``profile`` runs, in order. Raises :class:`DrillError` for an unknown
    profile or a section of the profile that ``text`` does not mark."""
    if profile not in PROFILES:
        raise DrillError(f"unknown drill profile {profile!r}; use one of {', '.join(PROFILES)}")
    sections = extract_sections(text, source)
    wanted = PROFILES[profile]
    missing = [s for s in wanted if s not in sections]
    if missing:
        raise DrillError(f"{source} has no `<!-- drill: {missing[0]} -->` block (the {profile} profile runs the "
                         f"sections {', '.join(wanted)}); put that marker on the line above a ```bash block of the "
                         "commands to run (REPRODUCE.md, 'The drill')")
    return [(s, c) for s in wanted for c in sections[s]]


def known_issues(text: str, source: str = REPRODUCE) -> list[tuple[str, str]]:
    """``[(symptom, fix), ...]`` from the table after ``<!-- drill: issues -->`` (none without the marker). The
    symptom is the first cell's text in backticks (or the whole cell). Raises :class:`DrillError` when the marker
    is not followed by a table."""
    lines = text.splitlines()
    at = next((i for i, ln in enumerate(lines) if (m := _MARKER.match(ln)) and m.group(1) == ISSUES), None)
    if at is None:
        return []
    i = _next_content(lines, at + 1)
    if i >= len(lines) or not lines[i].lstrip().startswith("|"):
        raise DrillError(f"{source}:{at + 1}: `<!-- drill: {ISSUES} -->` is not followed by a table "
                         "`| the output says | fix |`; add the table right below it")
    rows = []
    while i < len(lines) and lines[i].lstrip().startswith("|"):
        rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
        i += 1
    issues = []
    for cells in rows[2:]:  # the header and the |---| line
        if len(cells) < 2 or not cells[0]:
            continue
        m = re.search(r"`([^`]+)`", cells[0])
        issues.append((m.group(1) if m else cells[0], " | ".join(cells[1:])))
    return issues
