"""Every week-7 check on a passing and a failing input (and a SKIP where one applies)."""

import math

import pytest

from shared.report import FAIL, PASS, SKIP
from week07_sft import checks

BASE = {"format_compliance": 0.1, "rougeL": 0.10}
SFT = {"format_compliance": 0.9, "rougeL": 0.25}


def test_eval_set_clean():
    assert checks.eval_set_clean({t: 5 for t in "abcdef"}, 6, 0, 30).status == PASS
    assert checks.eval_set_clean({t: 5 for t in "abcde"}, 6, 0, 25).status == FAIL
    assert checks.eval_set_clean({t: 5 for t in "abcdef"}, 6, 1, 30).status == FAIL


def test_loss_decreases():
    assert checks.loss_decreases(2.0, 1.5, "r").status == PASS
    assert checks.loss_decreases(2.0, 2.1, "r").status == FAIL
    assert checks.loss_decreases(2.0, math.nan, "r").status == FAIL


def test_beats_base():
    assert checks.beats_base(BASE, SFT).status == PASS
    assert checks.beats_base(BASE, {**SFT, "rougeL": 0.05}).status == FAIL
    assert checks.beats_base(BASE, {**SFT, "format_compliance": 0.1}).status == FAIL
    assert checks.beats_base(BASE, SFT, judge=False).status == SKIP


def test_overfit_found():
    assert checks.overfit_found(8, 1.2, 0.1, True, 4, 0.5, 0.0).status == PASS
    assert checks.overfit_found(None, 1.2, 0.0, True, 4, 0.5, 0.0).status == FAIL
    assert checks.overfit_found(8, 1.2, 0.1, False, 4, 0.5, 0.0).status == FAIL
    assert checks.overfit_found(8, 1.2, 0.1, True, 4, math.nan, 0.0).status == FAIL


def test_versions_compared_and_improvements_show():
    assert checks.versions_compared(SFT, SFT, 20, 20, 30).status == PASS
    assert checks.versions_compared(SFT, SFT, 20, 10, 30).status == FAIL
    assert checks.versions_compared(SFT, SFT, 20, 20, 0).status == FAIL


def _items(compliant, rouge):
    return [{"id": f"e:{k}", "compliant": c, "rougeL": r} for k, (c, r) in enumerate(zip(compliant, rouge, strict=True))]


def test_improvements_show_needs_a_paired_significant_gain_and_no_significant_loss():
    n = 20
    v1 = _items([False] * n, [0.2] * n)
    # compliance up on 8 items, down on none (sign test p = 1/256, Holm x2 still < 0.05); ROUGE-L unchanged
    v2 = _items([True] * 8 + [False] * (n - 8), [0.2] * n)
    assert checks.improvements_show([v1], [v2], 0.05).status == PASS
    assert checks.improvements_show([v2], [v1], 0.05).status == FAIL  # the same gap the other way round
    # a lead of 3 items of 20: the means differ, the paired test cannot tell it from noise
    assert checks.improvements_show([v1], [_items([True] * 3 + [False] * (n - 3), [0.2] * n)], 0.05).status == FAIL
    # better on compliance, but ROUGE-L lower on every item: not an improvement
    worse_rouge = _items([True] * 8 + [False] * (n - 8), [0.2 - 0.01 * (k + 1) for k in range(n)])
    assert checks.improvements_show([v1], [worse_rouge], 0.05).status == FAIL
    assert checks.improvements_show([v1], [v2], 0.05, judge=False).status == SKIP
    # a second seed that undoes the first one's gain: averaged over seeds, v2 is no better
    assert checks.improvements_show([v1, v2], [v2, v1], 0.05).status == FAIL
    assert checks.improvements_show([v1, v1], [v2, v2], 0.05).status == PASS


def test_seed_mean_averages_each_item_over_seeds():
    a = _items([True, False], [0.4, 0.0])
    b = _items([False, False], [0.2, 0.6])
    assert checks.seed_mean([a, b]) == [{"id": "e:0", "compliant": 0.5, "rougeL": pytest.approx(0.3)},
                                        {"id": "e:1", "compliant": 0.0, "rougeL": pytest.approx(0.3)}]
    with pytest.raises(ValueError, match="same items"):
        checks.seed_mean([a, b[::-1]])


def test_paired_verdict_states_what_the_tests_found():
    n = 20
    v1 = _items([False] * n, [0.2] * n)
    v2 = _items([True] * 8 + [False] * (n - 8), [0.2] * n)
    assert checks.paired_verdict(checks.paired_harness(v1, v2), 0.05, "v1", "v2").startswith(
        "v2 is better than v1 on format compliance")
    assert "do not differ detectably" in checks.paired_verdict(checks.paired_harness(v1, v1), 0.05, "v1", "v2")
    with pytest.raises(ValueError, match="same items"):
        checks.paired_harness(v1, v2[::-1])


def test_harness_checkpoints():
    assert checks.harness_checkpoints(["a", "b", "c"]).status == PASS
    assert checks.harness_checkpoints(["a", "b", "b"]).status == FAIL


def test_trl_checks():
    # week 7's batch: the project 6.5e-6 low, TRL 5e-8 low, 1.3e-5 apart (the old absolute 1e-5 failed it)
    assert checks.trl_loss_equal(True, True, 1.9436245, 1.9436373, 1.9436374, 1e-5).status == PASS
    assert checks.trl_loss_equal(True, True, 1.9426245, 1.9436373, 1.9436374, 1e-5).status == FAIL  # project 5e-4 off
    assert checks.trl_loss_equal(True, True, 1.9436374, 1.9446373, 1.9436374, 1e-5).status == FAIL  # TRL 5e-4 off
    assert checks.trl_loss_equal(True, False, 1.0, 1.0, 1.0, 1e-5).status == FAIL
    assert checks.trl_loss_equal(False, True, 1.0, 1.0, 1.0, 1e-5).status == FAIL
    assert checks.trl_parity(2.0, 2.05, 0.05, 20).status == PASS
    assert checks.trl_parity(2.0, 2.2, 0.05, 20).status == FAIL
    assert checks.speed_vs_trl(10.5, 10.0, 0.10).status == PASS
    assert checks.speed_vs_trl(11.5, 10.0, 0.10).status == FAIL
    assert checks.speed_vs_trl(11.5, 10.0, 0.10, judge=False).status == SKIP


def test_configs_cited():
    ok = {"name": "a", "config_hash": "abcd1234", "data_sha256": "ff", "config_matches": "yes"}
    assert checks.configs_cited([ok]).status == PASS
    assert checks.configs_cited([ok, {**ok, "name": "b", "config_matches": "no"}]).status == FAIL
    assert checks.configs_cited([{**ok, "data_sha256": ""}]).status == FAIL
    assert checks.configs_cited([]).status == FAIL


def test_rerun_export_scratch_time():
    assert checks.rerun_reproduces(1.25, 1.25, "r").status == PASS
    assert checks.rerun_reproduces(1.25, 1.2500001, "r").status == FAIL
    assert checks.rerun_reproduces(None, None, "r", reason="off").status == SKIP
    assert checks.export_loads(1.5, 1.5000001, "m").status == PASS
    assert checks.export_loads(1.5, 1.6, "m").status == FAIL
    assert checks.scratch_row({"rougeL": 0.1, "format_compliance": 0.5}, "").status == PASS
    assert checks.scratch_row(None, "no export").status == SKIP
    assert checks.scratch_row({"rougeL": math.nan, "format_compliance": 0.5}, "").status == FAIL
    cramped = checks.scratch_row({"rougeL": 0.1, "format_compliance": 0.5}, "",
                                 {"block_size": 128, "items": 40, "room": 16, "cramped": 12})
    assert "12 of 40 eval prompts leave it fewer than 16 tokens" in cramped.measured
    assert checks.within_time(100, 120).status == PASS
    assert checks.within_time(130, 120).status == FAIL
