"""Week 12's log: the flagship's rows per stage, what each portfolio artefact measured, the checks."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd

from shared.report import Check
from week12_portfolio import checks
from week12_portfolio.config import Week12Config
from week12_portfolio.portfolio import WeekResults

TITLE = "Week 12 — the portfolio: the flagship end to end, RESULTS, REPRODUCE and its drill, TALK, Q&A, docs site"


def _fmt(v: Any) -> Any:
    return round(v, 4) if isinstance(v, float) else v


def flagship_rows(stages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per stage: its run, the harness scores and the stage's own numbers."""
    rows = []
    for s in stages:
        h = s.get("harness", {})
        rows.append({"stage": s["stage"], "run id": s.get("run_id") or "-", "reused": s.get("reused"),
                     **{k: _fmt(h.get(k)) for k in ("format_compliance", "rougeL", "exact_match",
                                                      "instruction_following")},
                     "answers sha256": h.get("answers_sha256"),
                     "stage metrics": ", ".join(f"{k} {v:.4g}" for k, v in s.get("metrics", {}).items()),
                     "export": s.get("export"), "fresh s": round(s.get("fresh_seconds", 0.0), 1)})
    return rows


def _not_run(cfg: Week12Config, stage: str) -> str:
    return (f"the {stage} stage is not in this profile's stages ({', '.join(cfg.stages)}): the CPU log checks it"
            if stage not in cfg.stages else f"the {stage} stage measured nothing")


def build_checks(cfg: Week12Config, res: WeekResults, week_seconds: float) -> list:
    """Every check of the week from ``res`` (the stages not run this profile are SKIP with the reason)."""
    f, out = res.flagship, []
    stages = f.get("stages", [])
    out.append(checks.flagship_hands_off(stages, f.get("starts", {})))
    out.append(checks.flagship_reproduces(f.get("recorded"), f.get("rerun"), f.get("rerun_stage", "dpo")))
    if stages:
        out.append(checks.flagship_within_budget(f["fresh_seconds"], f["budget_s"], f["reused"]))
        serve = next((s for s in stages if s["stage"] == "serve"), None)
        out.append(checks.engine_serves_the_model(serve["metrics"] if serve else None))
    r = res.results
    if r:
        out.append(checks.results_cite(r["rows"], r["citing"], r["weeks"], r["missing"]))
        out.append(checks.results_up_to_date(r["diff_lines"], r["source"]))
    if res.talk:
        out.append(checks.talk_covers(res.talk["problems"]))
    if res.qa:
        out.append(checks.qa_resolves(res.qa["questions"], cfg.qa.expected, res.qa["citations"], res.qa["problems"]))
    d = res.drill
    if d:
        out.append(checks.drill_completed(d["ran"], d.get("steps", 0), d.get("failed", []), d.get("seconds", 0.0),
                                          d["source"]))
        out.append(checks.drill_issues_documented([{"step": i, "fix": "fix:" in i} for i in d.get("issues", [])]))
    if res.links:
        out.append(checks.links_resolve(res.links["broken"], res.links["files"]))
        out.append(checks.artefacts_linked(res.links["unlinked"], res.links["artefacts"]))
    s = res.site
    if s:
        out.append(checks.site_builds(s.get("built", False), s.get("pages", 0), s.get("seconds", 0.0),
                                      s.get("error", ""), s.get("skip", "")))
        why = s.get("skip") or s.get("browser_skip", "")
        out.append(checks.site_opens(s.get("browser_pages", 0), s.get("images_loaded", 0), s.get("images", 0), why))
    if res.logs:
        out.append(checks.logs_fresh(res.logs["stale"], res.logs["logs"]))
    else:
        out.append(Check.skip("every weekly log is fresh (make logs-status)", _not_run(cfg, "logs"), "0 stale CPU logs"))
    if res.changelog:
        out.append(checks.changelog_tagged(res.changelog["versions"], res.changelog["expected"],
                                              res.changelog.get("own")))
    else:
        out.append(Check.skip("CHANGELOG v0.1 … v1.2, each version tagged", _not_run(cfg, "changelog"),
                              "each version with a log commit and a git tag"))
    out.append(checks.week_within_budget(week_seconds, cfg.budget_s))
    return out


def write_log(cfg: Week12Config, profile: str, overrides: list[str], res: WeekResults, t0: float,
              env: dict[str, Any]) -> int:
    """Write the week's log (``env``: :func:`shared.repro.environment` taken before the stages wrote anything);
    returns the week's exit code (0 = no check failed)."""
    from shared.cli import command_line
    from shared.report import WeeklyLog, log_dir

    log = WeeklyLog("week12", TITLE, log_dir("week12", profile))
    total = time.perf_counter() - t0
    f = res.flagship
    training = f.get("trained_here", 0.0)
    log.header(env, profile, command_line("week12_portfolio", profile, overrides), {
        "wall clock (s)": f"{total:.1f}", "flagship training in this run (s)": f"{training:.1f}",
        "written": ", ".join(res.written) or "nothing in the repository"})
    for c in build_checks(cfg, res, total - training):
        log.add(c)
    log.section("The flagship pipeline", "The project's GPT pre-trained (week 5's recipe) → SFT (week 7) → LoRA "
                "(week 8) → DPO (week 9) → served by the continuous-batching engine (week 11), each stage from the "
                "previous stage's Hugging Face export, with week 7's eval harness after every stage "
                f"({f.get('eval_items', 0)} frozen items, sha256 `{str(f.get('eval_sha256', ''))[:16]}`). "
                "`make flagship` runs it; on 2 CPU cores the budgets are tiny, so the rows show the hand-offs and the "
                "direction each stage moves the scores, not a useful assistant.")
    if f.get("stages"):
        log.table(pd.DataFrame(flagship_rows(f["stages"])), "flagship", "One row per stage.")
    elif f.get("missing"):
        log.text(f"Not run: {f['missing']}.")
    r = res.results
    if r:
        log.section("RESULTS.md", f"{r['rows']} rows over weeks {', '.join(r['weeks'])}, from `{r['source']}`; "
                    f"{r['citing']} cite their run id, config hash, commit and hardware. [RESULTS.md](../../RESULTS.md)")
    if res.qa:
        per = ", ".join(f"week {w}: {n}" for w, n in res.qa["per_week"].items())
        log.section("Q&A", f"[docs/qa.md](../qa.md): {res.qa['questions']} questions, {res.qa['citations']} "
                    f"citations, {len(res.qa['problems'])} problems ({per}).")
    if res.drill.get("ran"):
        d = res.drill
        log.section("The drill", f"{d['steps']} steps, {d['seconds']:,.0f} s ({d['source']}); failed: "
                    f"{', '.join(d['failed']) or 'none'}.")
    if res.changelog:
        log.section("Versions")
        log.table(pd.DataFrame(res.changelog["versions"]), "versions", "CHANGELOG.md's versions and their tags.")
    log.section("Timings")
    log.table(pd.DataFrame([{"stage": k, "seconds": round(v, 1)} for k, v in res.timings.items()]), "timings", "")
    return log.finish(total)
