"""Week 9's checks and failure-mode detectors: each passes on good numbers and fails (or skips) on bad ones."""

from __future__ import annotations

import math

import pytest

from week09_dpo import checks
from week09_dpo.diagnose import Thresholds, diagnose, flagged


def ev(step, loss=0.69, acc=0.0, margin=0.0, chosen=-50.0, kl=0.0, length=20.0, rep=0.05):
    return {"step": step, "val_loss": loss, "reward_accuracy": acc, "margin": margin, "logps_chosen": chosen,
            "logps_rejected": chosen - 5, "kl": kl, "gen_length": length, "gen_repetition": rep}


def test_the_detectors_flag_each_failure_mode_and_nothing_on_a_healthy_run():
    th = Thresholds(displacement_nats=1.0, verbosity_ratio=1.5, repetition_rise=0.15, kl_explode=1.0)
    healthy = diagnose([ev(0), ev(10, loss=0.6, margin=0.3, chosen=-49.5, kl=0.02, length=22)], th)
    assert flagged(healthy) == []
    bad = diagnose([ev(0), ev(10, loss=0.3, margin=2.0, chosen=-80.0, kl=3.0, length=48, rep=0.6)], th)
    assert flagged(bad) == ["likelihood displacement", "verbosity", "collapse", "KL explosion"]
    # chosen falling while the margin shrinks is not displacement (the preference is not being learned at all)
    assert "likelihood displacement" not in flagged(diagnose([ev(0), ev(10, margin=-0.5, chosen=-80.0)], th))
    assert flagged(diagnose([ev(0), ev(10, kl=math.nan)], th)) == ["KL explosion"]  # NaN KL is not bounded
    no_probe = [{k: v for k, v in e.items() if not k.startswith("gen_")} for e in (ev(0), ev(5))]
    assert math.isnan(diagnose(no_probe, th)["verbosity"]["value"])
    with pytest.raises(ValueError, match="first and last eval"):
        diagnose([ev(0)], th)


def test_rubric_check_fails_when_a_rule_is_under_its_minimum():
    good = [{"source": "hh_rlhf", "rule": "distinct", "share": 1.0, "min_share": 1.0}]
    assert checks.rubric_followed(good).passed
    bad = good + [{"source": "hh_rlhf", "rule": "chosen_deflects_no_less", "share": 0.85, "min_share": 0.88}]
    assert checks.rubric_followed(bad).failed
    assert checks.rubric_followed([]).status == "SKIP"


def test_training_stability_fails_on_nan_rising_loss_or_large_kl():
    evals = [ev(0, loss=0.693), ev(30, loss=0.60, kl=0.05)]
    assert checks.training_stable([0.69, 0.65, 0.6], evals, 0.5, math.log(2)).passed
    assert checks.training_stable([0.69, math.nan, 0.6], evals, 0.5, math.log(2)).failed
    assert checks.training_stable([0.69, 0.7], [ev(0, loss=0.693), ev(30, loss=0.70)], 0.5, math.log(2)).failed
    assert checks.training_stable([0.69, 0.6], [ev(0), ev(30, loss=0.5, kl=0.9)], 0.5, math.log(2)).failed


def test_accuracy_check_needs_a_significant_gain():
    per = {"hh_rlhf": (0.7, 20, 0.01)}
    assert checks.accuracy_improves([1.0] * 8 + [0.0] * 2, 0.001, 0.05, per, True).passed
    assert checks.accuracy_improves([1.0] * 8 + [0.0] * 2, 0.2, 0.05, per, True).failed
    assert checks.accuracy_improves([0.0] * 8 + [1.0] * 2, 0.001, 0.05, per, True).failed
    assert checks.accuracy_improves([1.0] * 10, 0.001, 0.05, per, False).status == "SKIP"
    assert checks.accuracy_improves([], 0.001, 0.05, {}, True).status == "SKIP"


def test_trl_checks_fail_on_different_ids_losses_or_curves():
    assert checks.trl_loss_equal(True, True, 1e-7, 1e-5, 0.7, 0.7).passed
    assert checks.trl_loss_equal(False, True, 0.0, 1e-5, 0.7, 0.7).failed
    assert checks.trl_loss_equal(True, True, 1e-3, 1e-5, 0.7, 0.701).failed
    assert checks.trl_curves_agree([0.69, 0.68], [0.69, 0.6801], 2e-3).passed
    assert checks.trl_curves_agree([0.69, 0.68], [0.69, 0.65], 2e-3).failed
    assert checks.trl_curves_agree([], [0.69], 2e-3).status == "SKIP"
    assert checks.speed_close(1.1, 1.0, 0.15, True).passed
    assert checks.speed_close(1.2, 1.0, 0.15, True).failed


def test_failure_check_needs_a_flagged_bad_run_and_a_fix():
    assert checks.failure_shown(["KL explosion"], {"fix": []}, "").passed
    assert checks.failure_shown([], {"fix": []}, "").failed  # the bad setting showed nothing: no demonstration
    assert checks.failure_shown(["KL explosion"], {"fix": ["KL explosion"]}, "").failed  # nothing fixed it
    assert checks.failure_shown(["collapse"], {}, "").status == "SKIP"
    rows = [{"run": "bad", "modes": {"likelihood displacement": {}, "KL explosion": {}}}]
    assert checks.failure_reported(rows).passed
    assert checks.failure_reported([{"run": "bad", "modes": {}}]).failed


def test_quality_reference_rerun_export_and_other_checks_can_fail():
    from shared.evals.paired import paired_harness

    sft = [{"id": i, "compliant": i % 2, "rougeL": 0.3} for i in range(20)]
    same = paired_harness(sft, [{**r, "rougeL": 0.29 if r["id"] < 3 else 0.3} for r in sft])
    assert checks.quality_kept(same, "exact match 0.2 → 0.1", 0.05, True).passed
    worse = paired_harness(sft, [{**r, "rougeL": 0.1} for r in sft])
    assert checks.quality_kept(worse, "", 0.05, True).failed
    assert "exact match" in checks.quality_kept(same, "exact match 0.2 → 0.1", 0.05, True).measured
    assert checks.quality_kept(None, "", 0.05, True).status == "SKIP"
    assert checks.reference_frozen(True, 0, 5e8).passed
    assert checks.reference_frozen(False, 0, 5e8).failed
    assert checks.reference_frozen(True, 3, 5e8).failed
    assert checks.rerun_reproduces({"val_loss": 0.6, "margin": 0.1}, {"val_loss": 0.6, "margin": 0.1}, "r").passed
    assert checks.rerun_reproduces({"val_loss": 0.6, "margin": 0.1}, {"val_loss": 0.61, "margin": 0.1}, "r").failed
    assert checks.export_loads(0.0, "p").passed
    assert checks.export_loads(1e-3, "p").failed
    assert checks.decision_backed("SFT only", {"a": 0.5}).passed
    assert checks.decision_backed("SFT only", {"a": math.nan}).failed
    assert checks.harness_rows(["sft", "SFT + DPO"], ["sft", "SFT + DPO"]).passed
    assert checks.harness_rows(["sft"], ["sft", "SFT + DPO"]).failed
    e = [{"val_loss": 0.6, "margin": 0.1, "kl": 0.01, "reward_accuracy": 0.6}]
    assert checks.sweep_done([0.1], e).passed
    assert checks.sweep_done([0.1], [{**e[0], "kl": math.nan}]).failed
    assert checks.variant_trains("ipo", [ev(0, loss=25.0), ev(8, loss=24.0)]).passed
    assert checks.variant_trains("ipo", [ev(0, loss=25.0), ev(8, loss=26.0)]).failed
    assert checks.within_time(10, 20).passed
    assert checks.within_time(30, 20).failed
