"""Every week-12 check passes on a good input and fails (or skips, with its reason) on a bad one."""

from __future__ import annotations

from week12_portfolio import checks

SHA = {"pretrain": "a", "sft": "b", "lora": "c", "dpo": "d"}


def _stages(serve_sha: str = "d") -> list[dict]:
    return [{"stage": s, "weights_sha256": SHA.get(s, serve_sha)} for s in checks.PIPELINE]


def test_hand_offs_pass_only_when_every_start_is_the_previous_export():
    starts = {"sft": "a", "lora": "b", "dpo": "c"}
    assert checks.flagship_hands_off(_stages(), starts).passed
    assert checks.flagship_hands_off(_stages(), {**starts, "lora": "a"}).failed  # LoRA started from the base
    assert checks.flagship_hands_off(_stages("x"), starts).failed  # served weights are not the DPO export
    assert checks.flagship_hands_off(_stages()[:3], starts).failed  # stopped after LoRA
    assert checks.flagship_hands_off([], {}).status == "SKIP"


def test_reproduction_compares_every_field():
    row = {"rougeL": 0.1, "format_compliance": 0.5, "answers_sha256": "ab"}
    assert checks.flagship_reproduces(row, dict(row), "dpo").passed
    assert checks.flagship_reproduces(row, {**row, "answers_sha256": "cd"}, "dpo").failed
    c = checks.flagship_reproduces(row, {**row, "rougeL": 0.2}, "dpo")
    assert c.failed
    assert "rougeL" in c.measured
    assert checks.flagship_reproduces(None, row, "dpo").status == "SKIP"


def test_budget_engine_and_week_time():
    assert checks.flagship_within_budget(100.0, 3600.0, 0).passed
    assert checks.flagship_within_budget(4000.0, 3600.0, 2).failed
    assert checks.flagship_within_budget(0.0, 3600.0, 0).failed  # nothing timed is not a pass
    serve = {"requests": 4, "same_as_greedy": 4, "engine_tokens_per_sec": 10.0, "static_tokens_per_sec": 5.0}
    assert checks.engine_serves_the_model(serve).passed
    assert checks.engine_serves_the_model({**serve, "same_as_greedy": 3}).failed
    assert checks.engine_serves_the_model(None).status == "SKIP"
    assert checks.week_within_budget(10.0, 900.0).passed
    assert checks.week_within_budget(901.0, 900.0).failed


def test_results_checks():
    assert checks.results_cite(10, 10, ["01"], []).passed
    assert checks.results_cite(10, 9, ["01"], []).failed
    assert checks.results_cite(10, 10, ["01"], ["02"]).failed
    assert checks.results_cite(0, 0, [], []).failed
    assert checks.results_up_to_date(0, "evidence").passed
    assert checks.results_up_to_date(2, "evidence").failed


def test_talk_qa_links_artefacts():
    assert checks.talk_covers([]).passed
    assert checks.talk_covers(["section 'Results' is missing"]).failed
    assert checks.qa_resolves(40, 40, 100, []).passed
    assert checks.qa_resolves(39, 40, 100, []).failed
    assert checks.qa_resolves(40, 40, 100, ["Q3: quote not found"]).failed
    assert checks.links_resolve([], 30).passed
    assert checks.links_resolve(["README.md:3: x.md -> missing"], 30).failed
    assert checks.artefacts_linked([], 7).passed
    assert checks.artefacts_linked(["TALK.md: not linked from README.md"], 7).failed


def test_drill_checks():
    assert checks.drill_completed(True, 5, [], 100.0, "log").passed
    assert checks.drill_completed(True, 5, ["make test"], 100.0, "log").failed
    assert checks.drill_completed(True, 0, [], 0.0, "log").failed
    assert checks.drill_completed(False, 0, [], 0.0, "docs/reproduction-log.json").status == "SKIP"
    assert checks.drill_issues_documented([]).passed
    assert checks.drill_issues_documented([{"step": "make test", "fix": "install x"}]).passed
    assert checks.drill_issues_documented([{"step": "make test", "fix": ""}]).failed


def test_site_logs_changelog():
    assert checks.site_builds(True, 30, 5.0, "").passed
    assert checks.site_builds(False, 0, 0.0, "broken link").failed
    assert checks.site_builds(False, 0, 0.0, "", "mkdocs is not installed").status == "SKIP"
    assert checks.site_opens(2, 3, 3).passed
    assert checks.site_opens(2, 2, 3).failed
    assert checks.site_opens(2, 0, 0).failed  # a log page without plots proves nothing about plots
    assert checks.site_opens(0, 0, 0, "no Chromium").status == "SKIP"
    assert checks.logs_fresh([], 11).passed
    assert checks.logs_fresh(["week03"], 11).failed
    assert checks.logs_fresh([], 0).failed
    expected = ["v0.1", "v0.2"]
    tagged = [{"version": "v0.1", "tagged": True, "has_log": True}, {"version": "v0.2", "tagged": True, "has_log": True}]
    assert checks.changelog_tagged(tagged, expected).passed
    assert checks.changelog_tagged(tagged[:1], expected).failed
    assert checks.changelog_tagged([tagged[0], {"version": "v0.2", "tagged": False}], expected).failed
    # a tag on a commit that does not hold the week's log is not that week's release
    assert checks.changelog_tagged([tagged[0], {"version": "v0.2", "tagged": True, "has_log": False}], expected).failed
    # the running week's own version is tagged after its log is written: listed is enough, missing is not
    assert checks.changelog_tagged([tagged[0], {"version": "v0.2", "tagged": False}], expected, own="v0.2").passed
    assert checks.changelog_tagged(tagged[:1], expected, own="v0.2").failed
