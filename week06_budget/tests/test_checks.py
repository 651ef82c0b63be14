"""Every week-6 check on a passing and a failing result (and a SKIP where one applies)."""

from dataclasses import replace

import pytest

from shared.stats import welch
from week06_budget import checks


def _run(**kw):
    base = {"name": "r", "budget": "max_tokens", "budget_value": 1000, "stopped_by": "max_tokens", "tokens": 960,
            "tokens_per_step": 64, "train_time_s": 5.0, "last_step_s": 0.1}
    return {**base, **kw}


def test_budget_enforced():
    seconds = _run(budget="max_seconds", budget_value=4.95, stopped_by="max_seconds")
    assert checks.budget_enforced([_run(), seconds]).status == "PASS"
    assert checks.budget_enforced([_run(tokens=1024)]).status == "FAIL"  # past the budget
    assert checks.budget_enforced([_run(tokens=896)]).status == "FAIL"  # more than one step short
    assert checks.budget_enforced([_run(stopped_by="stop_at")]).status == "FAIL"
    assert checks.budget_enforced([{**seconds, "budget_value": 4.5}]).status == "FAIL"  # passed by more than a step
    assert checks.budget_enforced([]).status == "FAIL"


def test_manifests_verified():
    assert checks.manifests_verified({"a/manifest.json": "", "b/manifest.json": ""}, 3).status == "PASS"
    assert checks.manifests_verified({"a/manifest.json": "train.bin has sha256 …"}, 3).status == "FAIL"
    assert checks.manifests_verified({"a/manifest.json": ""}, 0).status == "FAIL"


def test_versions_differ():
    assert checks.versions_differ(100, 90, {"exact": 10}, 0.1, 0.0, 1000, 900).status == "PASS"
    assert checks.versions_differ(100, 100, {"exact": 0}, 0.1, 0.1, 1000, 1000).status == "FAIL"
    assert checks.versions_differ(100, 90, {"exact": 10}, 0.0, 0.0, 1000, 900).status == "FAIL"


def test_val_clean():
    assert checks.val_clean({"A": 0, "B": 0}, 5, 100).status == "PASS"
    assert checks.val_clean({"A": 1, "B": 0}, 5, 100).status == "FAIL"


def test_ab_significance():
    apart = welch([4.60, 4.61, 4.62], [4.70, 4.71, 4.69])
    close = welch([4.60, 4.65, 4.62], [4.61, 4.66, 4.60])
    differ = checks.ab_significance(apart, 0.05)
    assert differ.status == "PASS"
    assert "they differ at 0.05: A is lower" in differ.measured
    same = checks.ab_significance(close, 0.05)
    assert same.status == "PASS"
    assert "they do not differ at 0.05" in same.measured
    assert checks.ab_significance(welch([4.60, 4.61], [4.70, 4.71]), 0.05).status == "FAIL"  # 2 seeds: too few
    nan = replace(apart, p=float("nan"))
    assert checks.ab_significance(nan, 0.05).status == "FAIL"


def test_tradeoff_explained():
    assert checks.tradeoff_explained(True, "", 3, 2, 0.5, (0.4, 0.6)).status == "PASS"
    assert checks.tradeoff_explained(True, "", 3, 0, 0.5, (0.4, 0.6)).status == "FAIL"  # every minimum extrapolated
    assert checks.tradeoff_explained(False, "no minimum", 0, 0, None, None).status == "FAIL"
    assert checks.tradeoff_explained(False, "x", 0, 0, None, None, skip_reason="smoke").status == "SKIP"


def test_memo_checks():
    assert checks.memo_runs_exist(["a", "b"], {"a", "b", "c"}).status == "PASS"
    assert checks.memo_runs_exist(["a", "z"], {"a"}).status == "FAIL"
    assert checks.memo_runs_exist([], {"a"}).status == "FAIL"
    assert checks.memo_reproduced(4.5, 4.5).status == "PASS"
    assert checks.memo_reproduced(4.5, 4.5 + 1e-12).status == "FAIL"  # bitwise, not approximately
    assert checks.memo_reproduced(None, None, skip_reason="off").status == "SKIP"


@pytest.mark.parametrize(("ratios", "status"), [([0.9, 1.1, 1.0], "PASS"), ([1.6, 1.5, 0.9], "FAIL"), ([], "FAIL")])
def test_estimate_matches(ratios, status):
    assert checks.estimate_matches(ratios, 0.75, 1.25).status == status


def test_within_time():
    assert checks.within_time(100, 120).status == "PASS"
    assert checks.within_time(130, 120).status == "FAIL"
