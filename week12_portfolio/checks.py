"""The plan's checks for week 12, each a pure function of what the week measured: results in, a ``Check`` out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shared.report import Check

Row = Mapping[str, Any]
PIPELINE = ("pretrain", "sft", "lora", "dpo", "serve")


def flagship_hands_off(stages: Sequence[Row], starts: Mapping[str, str]) -> Check:
    """The flagship ran every stage in order, and each training stage after the first started from the previous
    stage's export: the ``start_sha256`` its export records equals the previous stage's weights sha256; the served
    weights are the DPO export's. ``starts``: stage -> recorded start sha256."""
    name = "the flagship runs end to end, each stage from the previous one's export"
    crit = f"stages {' → '.join(PIPELINE)}; each start sha256 = the previous export's"
    order = [s["stage"] for s in stages]
    if not stages:
        return Check.skip(name, "the flagship did not run in this profile", crit)
    by = {s["stage"]: s for s in stages}
    bad = [st for prev, st in zip(PIPELINE, PIPELINE[1:4], strict=False)
           if st in by and prev in by and starts.get(st) != by[prev]["weights_sha256"]]
    if "serve" in by and "dpo" in by and by["serve"]["weights_sha256"] != by["dpo"]["weights_sha256"]:
        bad.append("serve")
    measured = f"stages {' → '.join(order)}; " + ("every hand-off matches" if not bad else
                                                    f"hand-off broken at {', '.join(bad)}")
    return Check.judge(name, tuple(order) == PIPELINE and not bad, measured, crit)


def flagship_reproduces(recorded: Row | None, rerun: Row | None, stage: str) -> Check:
    """Scoring the final export again (loaded fresh from disk) gives the recorded harness row: every score and the
    hash of the answers."""
    name = "the flagship reproduces (a rerun matches its recorded eval row)"
    crit = f"the {stage} export's harness row, scored again = the recorded row (scores and answers' sha256)"
    if recorded is None or rerun is None:
        return Check.skip(name, f"no recorded {stage} row to compare with", crit)
    diff = sorted(k for k in set(recorded) | set(rerun) if recorded.get(k) != rerun.get(k))
    measured = (f"answers {rerun.get('answers_sha256')} vs recorded {recorded.get('answers_sha256')}; "
                + ("every score equal" if not diff else f"differs in {', '.join(diff)}"))
    return Check.judge(name, not diff, measured, crit)


def flagship_within_budget(fresh_seconds: float, budget_s: float, reused: int) -> Check:
    """The pipeline as a fresh run (each stage's time when it last trained) fits the profile's budget."""
    name = "the flagship fits its time budget"
    crit = f"≤ {budget_s:,.0f} s as a fresh run"
    note = f" ({reused} stages reused: their recorded times)" if reused else ""
    return Check.judge(name, 0 < fresh_seconds <= budget_s, f"{fresh_seconds:,.0f} s{note}", crit)


def engine_serves_the_model(serve: Row | None) -> Check:
    """The engine's answers (continuous batching, paged KV cache) equal plain greedy decoding of the same model."""
    name = "the served model answers as plain greedy decoding does"
    crit = "engine answers = greedy_generate's for every request"
    if not serve:
        return Check.skip(name, "the serve stage did not run", crit)
    n, same = int(serve["requests"]), int(serve["same_as_greedy"])
    return Check.judge(name, n > 0 and same == n, f"{same} of {n} equal; engine {serve['engine_tokens_per_sec']:,.1f} "
                       f"tokens/s vs {serve['static_tokens_per_sec']:,.1f} without a cache", crit)


def results_cite(rows: int, citing: int, weeks: Sequence[str], missing: Sequence[str]) -> Check:
    """Every RESULTS row cites its run id, config hash, commit and hardware, and no week's headline is missing."""
    name = "every RESULTS table cites configs"
    crit = "every row: run id, config hash, commit, hardware; every week with a headline"
    measured = f"{citing} of {rows} rows cite all four; {len(weeks)} weeks" + (
        f"; missing: {', '.join(missing)}" if missing else "")
    return Check.judge(name, rows > 0 and citing == rows and not missing, measured, crit)


def results_up_to_date(diff_lines: int, source: str) -> Check:
    """RESULTS.md regenerated from its evidence equals the committed file (no hand edit, no stale number)."""
    name = "RESULTS.md is what its evidence generates"
    crit = "regenerated = committed (0 differing lines)"
    return Check.judge(name, diff_lines == 0, f"{diff_lines} differing lines (regenerated from {source})", crit)


def talk_covers(problems: Sequence[str]) -> Check:
    """TALK.md has the set-up, what was built, the results and the lessons, each linking to evidence, and its time
    marks run 0:00-15:00."""
    name = "TALK covers set-up, results and lessons"
    crit = "the four sections exist, each links to evidence; time marks 0:00–15:00"
    return Check.judge(name, not problems, "; ".join(problems) or "every section present and linked", crit)


def qa_resolves(questions: int, expected: int, citations: int, problems: Sequence[str]) -> Check:
    """``docs/qa.md`` has the expected number of questions and every citation resolves."""
    name = f"{expected} Q&A answers with resolving citations"
    crit = f"{expected} questions, every citation resolves, numbers found in the evidence"
    measured = f"{questions} questions, {citations} citations, {len(problems)} problems" + (
        f" (first: {problems[0]})" if problems else "")
    return Check.judge(name, questions == expected and not problems, measured, crit)


def drill_completed(ran: bool, steps: int, failed: Sequence[str], seconds: float, source: str) -> Check:
    """The reproduction drill followed REPRODUCE.md in a fresh clone to the end without a manual step."""
    name = "REPRODUCE dry run completed in a fresh folder"
    crit = "every marked REPRODUCE.md command ran in a fresh clone and exited 0"
    if not ran:
        return Check.skip(name, f"no drill log ({source}): run `make drill`", crit)
    measured = f"{steps} steps in {seconds:,.0f} s ({source})" + (f"; failed: {', '.join(failed)}" if failed else "")
    return Check.judge(name, steps > 0 and not failed, measured, crit)


def drill_issues_documented(issues: Sequence[Row]) -> Check:
    """Every issue the drill met has its fix written down (REPRODUCE.md's known-issues table)."""
    name = "the drill's issues are documented with fixes"
    crit = "each failed step matched to a known issue with its fix"
    undocumented = [i["step"] for i in issues if not i.get("fix")]
    measured = f"{len(issues)} issues, {len(undocumented)} without a fix" + (
        f" ({', '.join(undocumented)})" if undocumented else "")
    return Check.judge(name, not undocumented, measured, crit)


def links_resolve(broken: Sequence[str], files: int) -> Check:
    """Every relative link in the repository's Markdown resolves (file, folder or heading anchor)."""
    name = "every relative link in the repository's Markdown resolves"
    crit = "0 broken links"
    measured = f"{len(broken)} broken in {files} Markdown files" + (f" (first: {broken[0]})" if broken else "")
    return Check.judge(name, not broken, measured, crit)


def artefacts_linked(unlinked: Sequence[str], artefacts: int) -> Check:
    """Every key artefact exists, is linked from the README and is a page of the docs site."""
    name = "every artefact linked from the README and the docs site"
    crit = "each key artefact: exists, linked from README.md, in the site's nav"
    measured = f"{artefacts - len(unlinked)} of {artefacts}" + (f"; not: {'; '.join(unlinked)}" if unlinked else "")
    return Check.judge(name, not unlinked, measured, crit)


def site_builds(built: bool, pages: int, seconds: float, error: str, skip_reason: str = "") -> Check:
    """The docs site builds with ``mkdocs build --strict`` (no broken link, no missing page)."""
    name = "the docs site builds with --strict"
    crit = "mkdocs build --strict succeeds"
    if skip_reason:
        return Check.skip(name, skip_reason, crit)
    measured = f"{pages} pages in {seconds:.1f} s" if built else f"failed: {error[:300]}"
    return Check.judge(name, built and pages > 0, measured, crit)


def site_opens(pages: int, images_loaded: int, images: int, skip_reason: str = "") -> Check:
    """A headless browser opens the site's home page and a weekly log, and every plot on the log loads."""
    name = "the site opens in a browser and the log's plots load"
    crit = "home + one weekly log open; every <img> on the log loaded"
    if skip_reason:
        return Check.skip(name, skip_reason, crit)
    return Check.judge(name, pages >= 2 and images > 0 and images_loaded == images,
                       f"{pages} pages, {images_loaded} of {images} images loaded", crit)


def logs_fresh(stale: Sequence[str], logs: int) -> Check:
    """No committed CPU log is older than the code it describes (``make logs-status``)."""
    name = "every weekly log is fresh (make logs-status)"
    crit = "0 stale CPU logs"
    return Check.judge(name, logs > 0 and not stale,
                       f"{len(stale)} stale of {logs}" + (f": {', '.join(stale)}" if stale else ""), crit)


def changelog_tagged(versions: Sequence[Row], expected: Sequence[str], own: str | None = None) -> Check:
    """CHANGELOG.md has every planned version, and each is tagged on a commit of this repository that holds its
    week's CPU log (``has_log``). ``own``, the running week's version, is only required in CHANGELOG.md: its tag goes
    on the commit that holds the log this run writes, which does not exist yet."""
    name = "CHANGELOG v0.1 … v1.2, each version tagged"
    crit = (f"{len(expected)} versions ({expected[0]} … {expected[-1]}), each tagged on a commit holding its week's log"
            + (f" ({own}: after this log)" if own else ""))
    have = {v["version"]: v for v in versions}
    missing = [v for v in expected if v not in have]
    untagged = [v for v in expected if v in have and v != own and not have[v].get("tagged")]
    no_log = [v for v in expected if v in have and v != own and have[v].get("tagged") and not have[v].get("has_log")]
    measured = (f"{len(expected) - len(missing)} of {len(expected)} versions, {len(untagged)} untagged"
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; untagged {', '.join(untagged)}" if untagged else "")
                + (f"; tag without the week's log {', '.join(no_log)}" if no_log else ""))
    return Check.judge(name, not missing and not untagged and not no_log, measured, crit)


def week_within_budget(seconds: float, budget_s: float) -> Check:
    """The week (without the flagship's training) fits its time budget."""
    return Check.judge("the week fits its time budget (the flagship's training aside)", 0 < seconds <= budget_s,
                       f"{seconds:,.0f} s", f"≤ {budget_s:,.0f} s")
