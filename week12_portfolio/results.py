"""``RESULTS.md``: one section per week (a table, a plot, a sentence), every number drawn from the results registry
or from a committed CSV of the week's log, every row citing its run (run id, config hash, commit, hardware).

    python -m week12_portfolio.results                    # write RESULTS.md, docs/results/*.png, evidence.jsonl
    python -m week12_portfolio.results --weeks 07,08,09   # only these weeks
    python -m week12_portfolio.results --registry docs/results/evidence.jsonl --check   # a clean clone, or CI

A clean clone has no ``runs/registry.jsonl``: ``docs/results/evidence.jsonl`` holds the registry lines RESULTS cites
(without their bulky ``config``), and regenerating from it gives the same RESULTS.md. ``--check`` regenerates into
memory and exits 1 with a diff when the file on disk differs. What each week's headline is: :mod:`.headlines`.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.paths import REPO_ROOT
from shared.results import registry_path
from week12_portfolio.headlines import Cell, CsvSource, Headline, Item, Row, headlines, value

NO_GPU = "not run (no GPU lent)"
NOT_ON_GPU = "not run on the GPU"
ASSETS = Path("docs/results")
LOGS = Path("docs/weekly-logs")


class ResultsError(ValueError):
    """Bad input to RESULTS generation (no registry, a corrupt line, an unknown week); the message says the fix."""


class MissingRunsError(ResultsError):
    """A headline's runs (or one of their numbers) are not in the registry or the week's committed log."""


@dataclass
class ResultsSummary:
    """What a generation covered, for the week's checks."""

    weeks: list[str]  # weeks with a section ("07", ...)
    rows: int  # table rows over all sections
    rows_citing: int  # rows whose CPU cell (and GPU cell, when it holds a value) cites run id, hash, commit, hardware
    missing: dict[str, str] = field(default_factory=dict)  # week -> why its headline could not be built
    cited_runs: list[str] = field(default_factory=list)  # every run id cited, CPU and GPU


@dataclass
class Results:
    """A generated RESULTS.md in memory: its text, the registry lines it cites, and the rows behind each plot."""

    markdown: str
    evidence: list[dict[str, Any]]
    sections: list[tuple[Headline, list[Row]]]
    summary: ResultsSummary


class Registry:
    """The registry's lines, the latest line of each run id (a run re-registered counts once: its last line)."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise ResultsError(f"results registry {path} not found: a clean clone has none; regenerate from the "
                               f"committed evidence with --registry {ASSETS / 'evidence.jsonl'}, or run the weeks")
        self.path, self.by_id = path, {}
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ResultsError(f"{path}:{i} is not JSON ({e.msg}): remove or repair that line") from e
            lacking = [k for k in ("run_id", "week", "name", "profile", "metrics") if k not in rec]
            if lacking:
                raise ResultsError(f"{path}:{i} lacks {', '.join(lacking)}: not a registry line (shared.results)")
            order = (str(rec.get("finished_at", "")), i)
            if rec["run_id"] not in self.by_id or order >= self.by_id[rec["run_id"]][0]:
                self.by_id[rec["run_id"]] = (order, rec)

    def runs(self, week: str, profile: str, pattern: re.Pattern[str]) -> list[tuple[tuple[str, int], dict]]:
        """(order, line) of every run id of ``week`` and ``profile`` whose name matches ``pattern`` in full."""
        return [(o, r) for o, r in self.by_id.values()
                if r["week"] == f"week{week}" and r["profile"] == profile and pattern.fullmatch(r["name"])]

    def latest_by_name(self, week: str, profile: str, name: str) -> dict | None:
        """The run id of that name that finished last (the current config of that name), or None."""
        hits = self.runs(week, profile, re.compile(re.escape(name)))
        return max(hits, key=lambda h: h[0])[1] if hits else None


def _metric(rec: dict, path: str) -> float | None:
    v: Any = rec["metrics"]
    for part in path.split("."):
        if not isinstance(v, dict) or part not in v:
            return None
        v = v[part]
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _cell(rec: dict, v: float, extra: dict[str, float] | None = None) -> Cell:
    return Cell(v, rec["run_id"], str(rec.get("config_hash") or ""), str(rec.get("git_commit") or ""),
                bool(rec.get("git_dirty")), str(rec.get("hardware") or ""), "registry", extra or {})


def _group(item: Item, name: str) -> str:
    m = re.fullmatch(item.runs, name)
    return m.group("g") if m and "g" in m.re.groupindex else ""


def _pick(item: Item, found: list[tuple[Any, str, Cell]]) -> dict[str, Cell]:
    """``found`` = (order, name, cell): per run name the last by order (latest), else per group the max / min."""
    out: dict[str, tuple[Any, Cell]] = {}
    for order, name, c in found:
        key = name if item.pick == "latest" else _group(item, name)
        rank = order if item.pick == "latest" else (c.value if item.pick == "max" else -c.value)
        if key not in out or rank > out[key][0]:
            out[key] = (rank, c)
    return {k: c for k, (_, c) in out.items()}


def _natural(key: str) -> list[Any]:
    return [(0, int(t)) if t.isdigit() else (1, t) for t in re.split(r"(\d+)", key)]


def _registry_cells(reg: Registry, week: str, profile: str, item: Item, strict: bool) -> dict[str, Cell]:
    runs = reg.runs(week, profile, re.compile(item.runs))
    if item.pick == "latest":  # the latest run id of each name must hold the number; older configs do not count
        latest: dict[str, tuple[tuple[str, int], dict]] = {}
        for order, rec in runs:
            if rec["name"] not in latest or order > latest[rec["name"]][0]:
                latest[rec["name"]] = (order, rec)
        runs = list(latest.values())
    found = []
    for order, rec in runs:
        v = _metric(rec, item.metric)
        if v is None and strict and item.pick == "latest":
            raise MissingRunsError(f"week {week}: run {rec['run_id']} has no number at metrics.{item.metric} in "
                                   f"{reg.path}: fix the headline's metric in week12_portfolio/headlines.py")
        if v is not None:
            found.append((order, rec["name"], _cell(rec, v)))
    if not found and strict:
        raise MissingRunsError(f"week {week}: no {profile} run whose name matches '{item.runs}' with metrics."
                               f"{item.metric} in {reg.path}: run `{'make flagship' if week == '12' else f'make week{week}'}` (its runs "
                               "register there), or "
                               "leave the week out with --weeks")
    return dict(sorted(_pick(item, found).items(), key=lambda kv: _natural(kv[0])))


@dataclass
class _LogSide:
    """One of a week's committed logs (CPU, or the GPU reference log): where its CSVs are, its text (which runs it
    cites) and its header (commit, hardware)."""

    md: Path
    dir: Path
    profile: str

    @property
    def exists(self) -> bool:
        return self.md.is_file()

    def text(self) -> str:
        parts = [self.md.read_text()] if self.exists else []
        return "\n".join(parts + [p.read_text() for p in sorted(self.dir.glob("*.csv"))])

    def header(self) -> dict[str, str]:
        """The log's header table (``| key | value |`` rows before the first section)."""
        out = {}
        for line in self.md.read_text().splitlines() if self.exists else []:
            if line.startswith("## "):
                break
            cols = [c.strip() for c in line.strip().strip("|").split("|")]
            if line.startswith("|") and len(cols) == 2 and not set(cols[0]) <= set(":- "):
                out[cols[0]] = cols[1].strip("*`")
        return out


def _csv_rows(path: Path, src: CsvSource, week: str) -> list[dict[str, str]]:
    if not path.is_file():
        raise MissingRunsError(f"week {week}: {path} not found: the headline reads '{src.column}' from it; "
                               "regenerate the week's log or fix week12_portfolio/headlines.py")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    need = [c for c in (src.column, src.run_col, src.name_col, *(k for k, _ in src.where), *src.keep)
            if c and rows and c not in rows[0]]
    if need:
        raise MissingRunsError(f"week {week}: {path} has no column {', '.join(map(repr, need))}: fix the headline "
                               "in week12_portfolio/headlines.py")
    return [r for r in rows if all(r[k].strip() == v for k, v in src.where)]


def _number(text: str, what: str) -> float:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        raise MissingRunsError(f"{what} is {text!r}, not a number: fix the headline's column") from None


def _csv_cells(reg: Registry, week: str, item: Item, src: CsvSource, side: _LogSide, strict: bool
               ) -> dict[str, Cell]:
    """Cells from ``side``'s copy of ``src``. Strict (the CPU side): every run must be in the registry, and a run
    found by name must be cited by the log. Else (the GPU side) a run the registry lacks is cited from the log's
    header when the CSV names its run id, and left out when it does not."""
    path = side.dir / src.file
    pattern, found = re.compile(item.runs), []
    log_text = side.text()
    for i, row in enumerate(_csv_rows(path, src, week)):
        if src.run_col:
            run_id = row[src.run_col].strip(" `")
            name = run_id.rsplit("/", 1)[-1].rsplit("-", 1)[0]
            if not pattern.fullmatch(name):
                continue
            rec = reg.by_id.get(run_id, (None, None))[1]
        else:
            names = [row[src.name_col].strip()] if src.name_col else sorted(
                {r["name"] for _, r in reg.runs(week, side.profile, pattern)})
            names = [n for n in names if pattern.fullmatch(n)]
            if src.name_col and not names:
                continue
            if len(names) > 1:
                raise MissingRunsError(f"week {week}: '{item.runs}' matches several runs ({', '.join(names)}) in "
                                       f"{reg.path}; {path.name} belongs to one: narrow the pattern")
            rec = reg.latest_by_name(week, side.profile, names[0]) if names else None
            run_id = rec["run_id"] if rec else ""
            if rec and rec["run_id"] not in log_text:
                if strict:
                    raise MissingRunsError(f"week {week}: {side.md} does not cite {rec['run_id']}, the latest "
                                           f"registry run named {names[0]}: its {path.name} may come from another "
                                           "run; regenerate the week's log")
                continue
        v = _number(row[src.column], f"{path}:{i + 2} '{src.column}'")
        extra = {k: _number(row[k], f"{path}:{i + 2} '{k}'") for k in src.keep}
        if rec is not None:
            found.append((i, rec["name"], _cell(rec, v, extra)))
        elif strict:
            what = f"{path} cites run {run_id}, which" if run_id else (
                f"the run behind {path} (a {side.profile} run whose name matches '{item.runs}')")
            raise MissingRunsError(f"week {week}: {what} is not in {reg.path}: run `make week{week}` or regenerate "
                                   "the log")
        elif src.run_col and side.exists:
            head = side.header()
            commit = head.get("git commit", "")
            found.append((i, name, Cell(v, run_id, run_id.rsplit("-", 1)[-1], commit.split()[0] if commit else "",
                                        "dirty" in commit, head.get("hardware", ""), str(side.md), extra)))
    if not found and strict:
        raise MissingRunsError(f"week {week}: no row of {path} (filter {dict(src.where)}) belongs to a run "
                               f"matching '{item.runs}' in {reg.path}: run `make week{week}` or fix the headline")
    return _pick(item, found)


def week_rows(reg: Registry, h: Headline, logs: Path) -> list[Row]:
    """The table rows of headline ``h``: the CPU cells (required: a missing run raises
    :class:`MissingRunsError`), and beside each the GPU cell from a GPU-profile registry run, else from the GPU
    reference log, else the reason there is none."""
    cpu = _LogSide(logs / f"week{h.week}.md", logs / f"week{h.week}", "cpu")
    gpu = _LogSide(logs / "gpu" / f"week{h.week}.md", logs / "gpu" / f"week{h.week}", "gpu")
    rows: list[Row] = []
    for i, item in enumerate(h.items):
        if item.csv:
            mine = _csv_cells(reg, h.week, item, item.csv, cpu, strict=True)
            theirs = _csv_cells(reg, h.week, item, item.csv, gpu, strict=False) if gpu.exists else {}
        else:
            mine = _registry_cells(reg, h.week, "cpu", item, strict=True)
            theirs = _registry_cells(reg, h.week, "gpu", item, strict=False)
            if item.gpu_csv and gpu.exists:
                theirs = {**_csv_cells(reg, h.week, item, item.gpu_csv, gpu, strict=False), **theirs}
        for key, c in mine.items():
            rows.append(Row(i, key, item.label.format(name=c.name, g=_group(item, c.name)), c, theirs.get(key)))
    note = NOT_ON_GPU if gpu.exists or any(r.gpu for r in rows) else NO_GPU
    for r in rows:
        r.gpu_note = "" if r.gpu else note
    return rows


def _link(target: Path, out_dir: Path, text: str) -> str:
    return f"[{text}]({Path(os.path.relpath(target, out_dir)).as_posix()})"


def _esc(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _commit(c: Cell) -> str:
    return f"`{c.git_commit[:12]}`" + (" (dirty)" if c.git_dirty else "") if c.git_commit else "unknown"


def _gpu_run(c: Cell | None, root: Path, out_dir: Path) -> str:
    if c is None:
        return "—"
    where = "" if c.origin == "registry" else ", " + _link(root / c.origin, out_dir, "GPU reference log")
    return f"`{c.run_id}`, config `{c.config_hash}`, commit {_commit(c)}, {c.hardware}{where}"


def _table(h: Headline, rows: Sequence[Row], root: Path, out_dir: Path) -> str:
    head = ["result", "CPU", "GPU", "from", "CPU run", "config hash", "git commit", "hardware", "GPU run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for r in rows:
        item = h.items[r.item]
        src = (item.source if item.metric else
               _link(root / LOGS / f"week{h.week}" / item.csv.file, out_dir, item.csv.file) + f" `{item.csv.column}`")
        cells = [r.label, value(r.cpu.value, item.fmt), value(r.gpu.value, item.fmt) if r.gpu else r.gpu_note, src,
                 f"`{r.cpu.run_id}`", f"`{r.cpu.config_hash}`", _commit(r.cpu), r.cpu.hardware,
                 _gpu_run(r.gpu, root, out_dir)]
        lines.append("| " + " | ".join(_esc(c) for c in cells) + " |")
    return "\n".join(lines)


def _log_line(week: str, root: Path, out_dir: Path) -> str:
    parts = []
    for what, md in (("CPU log", root / LOGS / f"week{week}.md"),
                     ("GPU reference log", root / LOGS / "gpu" / f"week{week}.md")):
        if not md.is_file():
            parts.append(f"{what}: none committed")
            continue
        facts = ""
        if week != "12":  # week 12's log is written after RESULTS.md: its header would lag a run
            head = _LogSide(md, md.with_suffix(""), "").header()
            facts = ", ".join(f"{k} `{head[k]}`" if k == "git commit" else head[k]
                              for k in ("git commit", "hardware") if head.get(k))
        parts.append(f"{what}: {_link(md, out_dir, md.relative_to(root).as_posix())}" + (f" ({facts})" if facts else ""))
    return "; ".join(parts) + "."


def _weeks(selected: Sequence[str] | None, defined: Mapping[str, Headline]) -> list[str]:
    if selected is None:
        return sorted(defined)
    weeks = []
    for w in selected:
        w = w.strip()
        if not w:
            continue
        if not w.isdigit() or f"{int(w):02d}" not in defined:
            extra = " (week 12: set FLAGSHIP in week12_portfolio/headlines.py)" if w.isdigit() and int(w) == 12 else ""
            raise ResultsError(f"no headline for week {w!r}{extra}: choose among {', '.join(sorted(defined))}")
        weeks.append(f"{int(w):02d}")
    return sorted(set(weeks))


def build(registry: Path, weeks: Sequence[str] | None = None, root: Path = REPO_ROOT, out: Path | None = None,
          strict: bool = True, defined: Mapping[str, Headline] | None = None) -> Results:
    """RESULTS.md for ``weeks`` (default: every defined headline) from ``registry``, with links relative to
    ``out`` (default ``<root>/RESULTS.md``) and the logs under ``<root>/docs/weekly-logs``; nothing is written.
    ``defined`` replaces :func:`.headlines.headlines` (tests).

    Raises:
        ResultsError: no registry at ``registry``, a corrupt line, or an unknown week.
        MissingRunsError: (``strict``) a headline's runs are missing; the message names every such week, its
            pattern and the registry path. Not strict, those weeks are left out and named in ``summary.missing``.
    """
    defined = headlines() if defined is None else defined
    reg, chosen = Registry(registry), _weeks(weeks, defined)
    out_dir = (out or root / "RESULTS.md").parent
    sections, missing = [], {}
    for w in chosen:
        try:
            sections.append((defined[w], week_rows(reg, defined[w], root / LOGS)))
        except MissingRunsError as e:
            missing[w] = str(e)
    if missing and strict:
        raise MissingRunsError("; ".join(missing.values()))
    left = [w for w in sorted(set(defined) | {"12"}) if w not in chosen]
    md = ["# Results", "",
          "_Generated by `python -m week12_portfolio.results` from the results registry (`runs/registry.jsonl`) and "
          "the committed weekly logs; do not edit by hand. Every row cites the run behind its numbers. The registry "
          "lines cited are in " + _link(root / ASSETS / "evidence.jsonl", out_dir, "docs/results/evidence.jsonl")
          + ", so a clean clone regenerates this file with `--registry docs/results/evidence.jsonl`._", "",
          f"Weeks: {', '.join(h.week for h, _ in sections) or 'none'}."
          + (f" Not in this file: {', '.join(left)}." if left else "")
          + (f" Missing runs: {', '.join(missing)}." if missing else ""), ""]
    for h, rows in sections:
        plot = Path(os.path.relpath(root / ASSETS / f"week{h.week}.png", out_dir)).as_posix()
        md += [f"## Week {h.week}: {h.title}", "", h.summary(rows), "", _log_line(h.week, root, out_dir), "",
               _table(h, rows, root, out_dir), "", f"![Week {h.week}: {h.title}]({plot})", ""]
    cited = sorted({c.run_id for _, rows in sections for r in rows for c in (r.cpu, r.gpu) if c})
    evidence = [{k: v for k, v in reg.by_id[i][1].items() if k != "config"} for i in cited if i in reg.by_id]
    n_rows = sum(len(rows) for _, rows in sections)
    citing = sum(r.cpu.cites and (r.gpu is None or r.gpu.cites) for _, rows in sections for r in rows)
    summary = ResultsSummary([h.week for h, _ in sections], n_rows, citing, missing, cited)
    return Results("\n".join(md).rstrip() + "\n", evidence, sections, summary)


def _panels(h: Headline, rows: Sequence[Row]) -> dict[str, list[Row]]:
    """Rows by the axis they are drawn on: items sharing an axis label share a panel."""
    out: dict[str, list[Row]] = {}
    for r in rows:
        out.setdefault(h.items[r.item].axis or h.items[r.item].label, []).append(r)
    return out


def _plot(h: Headline, rows: Sequence[Row], path: Path) -> None:
    """One figure per week: the headline's own plot, else one panel per axis with a dot per row (CPU; GPU beside
    it), its value written next to it. Dots, not bars: a loss axis from zero would hide the differences."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = _panels(h, rows)
    fig = Figure(figsize=(8, 1.0 + sum(0.9 + 0.3 * len(p) for p in panels.values())))
    FigureCanvasAgg(fig)
    if h.plot is not None:
        h.plot(fig, rows)
    else:
        for ax, (axis, mine) in zip(fig.subplots(len(panels), 1, squeeze=False)[:, 0], panels.items(), strict=True):
            keys = [r.key or r.cpu.name for r in mine]
            ticks = keys if len(set(keys)) == len(keys) else [r.label for r in mine]
            ys = range(len(mine))
            for side, marker, dy in (("cpu", "o", 0.12), ("gpu", "s", -0.12)):
                pts = [(getattr(r, side).value, y + dy, h.items[r.item].fmt) for r, y in zip(mine, ys, strict=True)
                       if getattr(r, side)]
                if pts:
                    ax.plot([x for x, _, _ in pts], [y for _, y, _ in pts], marker, linestyle="", label=side.upper())
                    for x, y, spec in pts:
                        ax.annotate(value(x, spec), (x, y), textcoords="offset points", xytext=(5, -3), fontsize=7)
            ax.set_yticks(list(ys), ticks, fontsize=7)
            ax.set_ylim(-0.6, len(mine) - 0.4)
            ax.margins(x=0.15)
            ax.set_xlabel(axis, fontsize=8)
            ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"Week {h.week}: {h.title}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})


def write(res: Results, out: Path, root: Path = REPO_ROOT) -> None:
    """Write ``out``, one plot per section under ``<root>/docs/results/`` and the cited registry lines to
    ``<root>/docs/results/evidence.jsonl``."""
    assets = root / ASSETS
    for h, rows in res.sections:
        _plot(h, rows, assets / f"week{h.week}.png")
    assets.mkdir(parents=True, exist_ok=True)
    (assets / "evidence.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in res.evidence))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(res.markdown)


def check(res: Results, out: Path) -> str:
    """The unified diff between ``out`` on disk and the regenerated text ('' when they are equal)."""
    old = out.read_text() if out.is_file() else ""
    if old == res.markdown:
        return ""
    diff = "".join(difflib.unified_diff(old.splitlines(True), res.markdown.splitlines(True), f"{out} (on disk)",
                                        f"{out} (regenerated)"))
    return diff or f"{out} is missing\n"


def main(argv: list[str] | None = None) -> int:
    """The command line; exit 0 (written, or ``--check`` equal), 1 (``--check`` differs), 2 (an error)."""
    p = argparse.ArgumentParser(prog="python -m week12_portfolio.results", description=__doc__.splitlines()[0])
    p.add_argument("--registry", type=Path, default=None, help="registry JSONL (default: runs/registry.jsonl)")
    p.add_argument("--out", type=Path, default=None, help="the file to write or check (default: RESULTS.md)")
    p.add_argument("--weeks", default=None, help="comma-separated weeks, e.g. 07,08 (default: every headline)")
    p.add_argument("--check", action="store_true", help="regenerate in memory; exit 1 with a diff if it differs")
    p.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root holding docs/ (tests)")
    args = p.parse_args(argv)
    out = args.out or args.root / "RESULTS.md"
    try:
        res = build(args.registry or registry_path(), args.weeks.split(",") if args.weeks else None, args.root, out)
    except ResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    s = res.summary
    if args.check:
        diff = check(res, out)
        print(diff or f"{out} is up to date ({s.rows} rows, weeks {', '.join(s.weeks)})", end="" if diff else "\n")
        return 1 if diff else 0
    write(res, out, args.root)
    print(f"wrote {out}: weeks {', '.join(s.weeks)}, {s.rows} rows ({s.rows_citing} citing run id, config hash, "
          f"commit and hardware), {len(s.cited_runs)} runs cited; plots and evidence.jsonl in {args.root / ASSETS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
