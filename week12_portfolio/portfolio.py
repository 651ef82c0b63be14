"""Week 12's stages, each reading what the earlier weeks recorded and building one artefact: the flagship's rows,
RESULTS.md, the Q&A check, TALK.md, the link walk, the docs site, the drill, the logs' freshness and the CHANGELOG's
tags. Each stage fills :class:`WeekResults`; the checks and the log read only that."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shared.paths import REPO_ROOT
from shared.results import registry_path
from week12_portfolio.config import Week12Config
from week12_portfolio.flagship_config import FlagshipConfig

# The plan's versions, one per week: v0.1 .. v0.9 for weeks 1-9, then v1.0, v1.1, v1.2 for weeks 10-12.
VERSIONS = tuple(f"v0.{w}" for w in range(1, 10)) + ("v1.0", "v1.1", "v1.2")


@dataclass
class WeekResults:
    """Everything the week measured, by stage (plain data: the checks are pure functions of it)."""

    profile: str
    flagship: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    qa: dict[str, Any] = field(default_factory=dict)
    talk: dict[str, Any] = field(default_factory=dict)
    links: dict[str, Any] = field(default_factory=dict)
    site: dict[str, Any] = field(default_factory=dict)
    drill: dict[str, Any] = field(default_factory=dict)
    logs: dict[str, Any] = field(default_factory=dict)
    changelog: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)  # files this run wrote (repository-relative when inside it)


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def flagship_stage(cfg: Week12Config, fcfg: FlagshipConfig, profile: str, res: WeekResults) -> None:
    """The flagship's recorded result (the pipeline runs first when it has none, finished stages reused), each
    stage's recorded start, and the final export scored again."""
    from week12_portfolio import flagship

    summary = flagship.read_summary(profile)
    ran_here = False
    if summary is None or (cfg.flagship.run and profile == "smoke"):
        ran_here = cfg.flagship.run
        summary = flagship.run_flagship(fcfg, profile) if cfg.flagship.run else None
    if summary is None:
        res.flagship = {"missing": f"no {flagship.summary_path(profile)}: run `make flagship PROFILE={profile}`"}
        return
    starts = {}
    for s in summary.stages:
        meta_file = flagship.export_dir(profile, s.stage) / "aifs_export.json"
        if s.stage != "serve" and meta_file.is_file():
            starts[s.stage] = json.loads(meta_file.read_text())["meta"].get("start_sha256", "")
    stage = cfg.flagship.rerun_stage
    recorded = summary.stage(stage)
    rerun = flagship.rerun_harness(fcfg, profile, stage) if recorded else None
    res.flagship = {"stages": [asdict(s) for s in summary.stages], "starts": starts, "recorded": recorded.harness
                    if recorded else None, "rerun": rerun, "rerun_stage": stage, "fresh_seconds": summary.fresh_seconds,
                    "budget_s": fcfg.budget_s, "eval_items": summary.eval_items, "eval_sha256": summary.eval_sha256,
                    "reused": sum(s.reused for s in summary.stages),
                    # the pipeline's training time spent in this process (the week's own budget leaves it out)
                    "trained_here": sum(s.seconds for s in summary.stages if not s.reused) if ran_here else 0.0}


def results_stage(cfg: Week12Config, res: WeekResults, out_dir: Path) -> None:
    """RESULTS.md: from the registry at its committed place (cpu), else regenerated from the committed evidence and
    compared with the committed file (a clean clone has no registry)."""
    from week12_portfolio import results

    evidence = REPO_ROOT / "docs" / "results" / "evidence.jsonl"
    target = REPO_ROOT / "RESULTS.md"
    if cfg.outputs.in_repo:
        built = results.build(registry_path(), None, REPO_ROOT, target, strict=False)
        results.write(built, target, REPO_ROOT)
        res.written += ["RESULTS.md", "docs/results/"]
        source = "runs/registry.jsonl"
    else:
        built = results.build(evidence, None, REPO_ROOT, target, strict=False)
        source = "docs/results/evidence.jsonl"
    diff = results.check(built, target)
    s = built.summary
    res.results = {"rows": s.rows, "citing": s.rows_citing, "weeks": s.weeks, "missing": sorted(s.missing),
                   "diff_lines": sum(1 for ln in diff.splitlines() if ln[:1] in "+-" and ln[:3] not in ("+++", "---")),
                   "source": source, "headlines": [(f"week{h.week}", h.summary(rows)) for h, rows in built.sections]}


def qa_stage(cfg: Week12Config, res: WeekResults) -> None:
    """docs/qa.md: every citation resolved, the structure checked."""
    from week12_portfolio import qa

    report = qa.check(rules=qa.Rules(expected=cfg.qa.expected, min_per_week=cfg.qa.min_per_week))
    summary = report.summary()
    res.qa = {"questions": summary.get("questions", 0), "citations": summary.get("citations", 0),
              "per_week": summary.get("per_week", {}), "problems": [str(p) for p in report.problems]}


def talk_stage(cfg: Week12Config, res: WeekResults, out_dir: Path) -> None:
    """TALK.md from the logs, the flagship and RESULTS; then its own check."""
    from week12_portfolio.talk import TalkInputs, build_talk, talk_problems
    from week12_portfolio.weeklogs import read_log, week_names

    logs = [log for w in week_names() if w != "week12" and (log := read_log(w)) is not None]
    hardware = ", ".join(sorted({log.header.get("hardware", "?") for log in logs}))
    d = res.drill
    drill = (f"{d['steps']} steps in {d['seconds']:,.0f} s, {'completed' if not d['failed'] else 'stopped at ' + d['failed'][0]}"
             if d.get("ran") else "")
    text = build_talk(TalkInputs(logs, res.flagship.get("stages", []), res.results.get("headlines", []), hardware,
                                 drill, res.qa.get("questions", 0)))
    path = REPO_ROOT / "TALK.md" if cfg.outputs.in_repo else out_dir / "TALK.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    res.written.append(_rel(path))
    res.talk = {"path": _rel(path), "problems": talk_problems(text), "words": len(text.split())}


def links_stage(cfg: Week12Config, res: WeekResults) -> None:
    """Every relative link of the repository's Markdown, and the key artefacts' reachability."""
    from week12_portfolio import links

    index = links.RepoIndex(REPO_ROOT)
    broken = links.check_links(REPO_ROOT, index)
    unlinked = links.unlinked_artefacts(cfg.key_artefacts, REPO_ROOT)
    res.links = {"files": len(index.markdown), "broken": [str(b) for b in broken],
                 "unlinked": [f"{u.path}: {', '.join(u.reasons)}" for u in unlinked],
                 "artefacts": len(cfg.key_artefacts)}


def site_stage(cfg: Week12Config, res: WeekResults, out_dir: Path) -> None:
    """The MkDocs site (--strict) into ``site/`` (cpu: where ``make docs`` puts it, gitignored) or the run's folder,
    then the headless-browser check."""
    from week12_portfolio import browser, site

    missing = site.mkdocs_missing()
    if missing:
        res.site = {"skip": missing}
        return
    out = REPO_ROOT / "site" if cfg.outputs.in_repo else out_dir / "site"
    try:
        b = site.build_site(REPO_ROOT, out)
        res.site = {"built": True, "pages": b.pages, "seconds": b.seconds, "error": ""}
    except site.SiteBuildError as e:
        res.site = {"built": False, "pages": 0, "seconds": 0.0, "error": str(e)}
        return
    why = browser.browser_missing()
    if why:
        res.site["browser_skip"] = why
        return
    c = browser.check_site(out, b.site_name)
    res.site.update(browser_pages=len(c.pages), images=c.images_total, images_loaded=c.images_loaded,
                    browser_problems=list(c.problems), browser_seconds=c.seconds)


def drill_stage(cfg: Week12Config, res: WeekResults, out_dir: Path) -> None:
    """The drill: run here (smoke, reusing this environment's packages) or read from its committed JSON."""
    from week12_portfolio import drill

    if cfg.drill.run:
        r = drill.run_drill(REPO_ROOT, cfg.drill.profile, venv=sys.prefix, allow_dirty=True)
        drill.write_log(r, out_dir / "reproduction-log.md")
        data = asdict(r)
    else:
        path = REPO_ROOT / Path(cfg.drill.log).with_suffix(".json")
        if not path.is_file():
            res.drill = {"ran": False, "source": _rel(path)}
            return
        data = json.loads(path.read_text())
    steps = data["steps"]
    failed = [s["command"] for s in steps if s.get("returncode") != 0]
    res.drill = {"ran": True, "steps": len(steps), "failed": failed + list(data.get("not_run", []))[:1],
                 "seconds": data["seconds"], "issues": data.get("issues", []),
                 "source": f"{cfg.drill.log}, the {data.get('profile', '?')} drill" if not cfg.drill.run
                 else f"this run, the {cfg.drill.profile} drill"}


def logs_stage(res: WeekResults) -> None:
    """``tools/logs_status.py`` (run as a command: a week imports no project tool): the stale CPU logs, week 12's
    own aside (it is the log being written)."""
    out = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "logs_status.py")], capture_output=True,
                         text=True, cwd=REPO_ROOT, check=False).stdout
    rows = [ln.split() for ln in out.split("GPU reference logs")[0].splitlines() if re.match(r"^week\d\d\s+cpu", ln)]
    stale = [r[0] for r in rows if r[0] != "week12" and ("STALE" in r or "MISSING" in r)]
    res.logs = {"stale": stale, "logs": sum(r[0] != "week12" for r in rows)}


def changelog_stage(res: WeekResults) -> None:
    """CHANGELOG.md's versions (``## vX.Y — week N: …``), whether each one's tag exists and whether the tagged commit
    holds that week's CPU log (``docs/weekly-logs/weekNN.md``, NN from the version's place in :data:`VERSIONS`)."""
    text = (REPO_ROOT / "CHANGELOG.md").read_text()
    versions = []
    for m in re.finditer(r"^## (v\d+\.\d+) — (.*)$", text, re.M):
        version = m.group(1)
        tag = _git("rev-parse", "--verify", "--quiet", f"{version}^{{commit}}")
        has_log = False
        if tag.returncode == 0 and version in VERSIONS:
            log = f"docs/weekly-logs/week{VERSIONS.index(version) + 1:02d}.md"
            has_log = _git("cat-file", "-e", f"{tag.stdout.strip()}:{log}").returncode == 0
        versions.append({"version": version, "title": m.group(2).strip(), "tagged": tag.returncode == 0,
                         "commit": tag.stdout.strip()[:12], "has_log": has_log})
    res.changelog = {"versions": versions, "expected": list(VERSIONS), "own": VERSIONS[-1]}


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False)


def timed(res: WeekResults, name: str, fn: Any, *args: Any) -> None:
    t = time.perf_counter()
    fn(*args)
    res.timings[name] = time.perf_counter() - t
