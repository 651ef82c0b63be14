"""The weekly-log builder: ``docs/weekly-logs/weekNN.md`` plus its plots and CSV tables.

A week's script collects tables (pandas), figures (matplotlib) and checks (measured value +
PASS/FAIL/SKIP) into a :class:`WeeklyLog` and writes it in one go; nobody edits a log by hand.
Layout written::

    <out_dir>/weekNN.md
    <out_dir>/weekNN/<name>.png | <name>.csv
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from shared.atomic import atomic_path, atomic_write_text
from shared.config import flatten, to_dict
from shared.repro import hardware_summary

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


@dataclass(frozen=True)
class Check:
    """One acceptance check: its verdict and the value it was judged on.

    ``status`` is PASS or FAIL when the condition was measured, SKIP (with ``reason``) when it cannot be measured
    on this hardware or run: a SKIP is never shown or counted as a PASS. A week's check functions are pure (the
    run's results in, a ``Check`` out) so that each can be fed a failing result in a test.
    """

    name: str
    status: str
    measured: str
    criterion: str
    reason: str = ""  # why a SKIP was not measured

    def __post_init__(self) -> None:
        if self.status not in (PASS, FAIL, SKIP):
            raise ValueError(f"check {self.name!r}: status must be PASS, FAIL or SKIP, not {self.status!r}")
        if self.status == SKIP and not self.reason:
            raise ValueError(f"check {self.name!r}: a SKIP needs its reason")

    @classmethod
    def judge(cls, name: str, passed: bool, measured: str, criterion: str) -> Check:
        """PASS when ``passed`` is true, else FAIL."""
        return cls(name, PASS if passed else FAIL, measured, criterion)

    @classmethod
    def skip(cls, name: str, reason: str, criterion: str, measured: str = "not measured") -> Check:
        """A check whose condition cannot be measured here; ``reason`` says why (e.g. "needs a GPU")."""
        return cls(name, SKIP, measured, criterion, reason)

    @property
    def passed(self) -> bool:
        return self.status == PASS

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    @property
    def result(self) -> str:
        """The log's result cell: ``PASS``, ``FAIL`` or ``SKIP (reason)``."""
        return f"SKIP ({self.reason})" if self.status == SKIP else self.status

    def line(self) -> str:
        """``PASS  name: measured (criterion)`` for the console."""
        why = f" [skipped: {self.reason}]" if self.status == SKIP else ""
        return f"{self.status}  {self.name}: {self.measured} (criterion: {self.criterion}){why}"


def count_checks(checks: list[Check]) -> str:
    """``"5 PASS, 1 SKIP, 0 FAIL (of 6)"``."""
    n = {s: sum(c.status == s for c in checks) for s in (PASS, SKIP, FAIL)}
    return f"{n[PASS]} PASS, {n[SKIP]} SKIP, {n[FAIL]} FAIL (of {len(checks)})"


def _md_table(df: pd.DataFrame) -> str:
    """``df`` as a GitHub Markdown table; a ``|`` inside a cell or a header (``|Δ|``) is escaped as ``\\|``,
    else it would end the cell and shift the row."""
    esc = {c: str(c).replace("|", "\\|") for c in df.columns}
    body = df.rename(columns=esc).map(lambda v: v.replace("|", "\\|") if isinstance(v, str) else v)
    return body.to_markdown(index=False, floatfmt="g")


class WeeklyLog:
    """Collects one week's report and writes it as Markdown with assets beside it.

    Args:
        week: e.g. ``"week01"`` (file stem and asset folder name).
        title: the log's title line.
        out_dir: ``docs/weekly-logs`` for real runs, the run directory for smoke runs.
    """

    def __init__(self, week: str, title: str, out_dir: str | Path) -> None:
        self.week, self.title = week, title
        self.out_dir = Path(out_dir)
        self.md_path = self.out_dir / f"{week}.md"
        self.asset_dir = self.out_dir / week
        self.head: list[str] = []
        self.body: list[str] = []
        self.checks: list[Check] = []
        if self.asset_dir.exists():  # stale plots of an earlier run must not linger beside new text
            shutil.rmtree(self.asset_dir)
        self.asset_dir.mkdir(parents=True)

    def header(self, env: dict[str, Any], profile: str, command: str, facts: dict[str, Any] | None = None) -> None:
        """Environment and run facts at the top of the log."""
        gpus = ", ".join(f"{g['name']} ({g['memory_gib']} GiB)" for g in env.get("gpus", [])) or "none"
        rows = {
            "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "command": f"`{command}`",
            "profile": f"**{profile}**",
            "hardware": hardware_summary(env),
            "GPUs": gpus,
            "CPU cores (torch threads)": f"{env.get('cpu_count')} ({env.get('torch_threads')})",
            "OS": env.get("os"),
            "Python / torch": f"{env.get('python')} / {env.get('torch')}",
            "CUDA / cuDNN / driver": f"{env.get('cuda')} / {env.get('cudnn')} / {env.get('driver')}",
            "git commit": f"{(env.get('git_commit') or 'unknown')[:12]}{' (dirty)' if env.get('git_dirty') else ''}",
            **(facts or {}),
        }
        self.head.append(_md_table(pd.DataFrame({"": list(rows), "value": [str(v) for v in rows.values()]})))

    def text(self, markdown: str) -> None:
        """A paragraph of Markdown."""
        self.body.append(markdown.strip())

    def section(self, title: str, intro: str = "") -> None:
        """A ``##`` heading, optionally followed by a paragraph."""
        self.body.append(f"## {title}")
        if intro:
            self.text(intro)

    def table(self, df: pd.DataFrame, name: str, caption: str = "", show: bool = True) -> Path:
        """A Markdown table, also saved as ``<name>.csv`` beside the log; returns the CSV path. ``show=False``
        links the CSV without printing the table (per-item data too long to read in the log)."""
        csv_path = self.asset_dir / f"{name}.csv"
        with atomic_path(csv_path) as tmp:
            df.to_csv(tmp, index=False)
        cap = f"{caption} " if caption else ""
        link = f"{cap}([CSV]({self.week}/{name}.csv))"
        self.body.append(f"{_md_table(df)}\n\n{link}" if show else f"{link}: {len(df):,} rows")
        return csv_path

    def config(self, cfg: Any, name: str = "config") -> None:
        """The resolved config as a key/value table."""
        flat = flatten(to_dict(cfg))
        self.table(pd.DataFrame({"key": list(flat), "value": [str(v) for v in flat.values()]}), name)

    def plot(self, fig: Any, name: str, caption: str) -> Path:
        """Save a matplotlib figure as ``<name>.png`` and embed it; closes the figure."""
        import matplotlib.pyplot as plt

        png = self.asset_dir / f"{name}.png"
        with atomic_path(png) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        self.body.append(f"![{caption}]({self.week}/{name}.png)\n\n*{caption}*")
        return png

    def check(self, name: str, passed: bool, measured: str, criterion: str) -> Check:
        """Record a PASS/FAIL check; it appears in the log's Checks table and on the console."""
        return self.add(Check.judge(name, bool(passed), measured, criterion))

    def add(self, *checks: Check) -> Check:
        """Record checks computed by a week's check functions; returns the last."""
        self.checks.extend(checks)
        return checks[-1]

    @property
    def all_passed(self) -> bool:
        """At least one check, and none FAILED (a SKIP with its reason does not fail the week)."""
        return bool(self.checks) and not any(c.failed for c in self.checks)

    def render(self) -> str:
        """The whole log as Markdown."""
        checks = pd.DataFrame(
            [{"check": c.name, "measured": c.measured, "criterion": c.criterion, "result": c.result} for c in self.checks]
        )
        parts = [
            f"# {self.title}",
            "_Generated by the week's script from its own runs; do not edit by hand._",
            *self.head,
            f"## Checks: {count_checks(self.checks)}",
            _md_table(checks) if self.checks else "(no checks)",
            *self.body,
        ]
        return "\n\n".join(parts) + "\n"

    def write(self) -> Path:
        """Atomically write the Markdown file; returns its path."""
        return atomic_write_text(self.md_path, self.render())

    def finish(self, total_s: float) -> int:
        """Write the log, print every check and a summary line; the week's exit code (0 = all PASS)."""
        from shared.tracking import console

        path = self.write()
        console("\n" + "\n".join(c.line() for c in self.checks))
        console(f"\nweekly log: {path}  (checks: {count_checks(self.checks)}, {total_s:.1f} s)")
        return 0 if self.all_passed else 1


def log_dir(week: str, profile: str) -> Path:
    """Where a week's log goes, under ``docs/weekly-logs`` (or ``$AIFS_LOGS_ROOT``):

    - ``cpu``: ``<logs>/weekNN.md`` (+ ``weekNN/``), the log a CPU reproduces and CI keeps fresh;
    - ``gpu``: ``<logs>/gpu/weekNN.md`` (+ ``gpu/weekNN/``), the reference log of a GPU run;
    - ``smoke``: the run folder ``runs/weekNN/smoke/log``, so that CI never overwrites a committed log.
    """
    from shared.paths import logs_root, runs_root

    if profile == "smoke":
        return runs_root() / week / "smoke" / "log"
    return logs_root() / "gpu" if profile == "gpu" else logs_root()
