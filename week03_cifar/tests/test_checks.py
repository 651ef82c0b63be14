"""Week 3's checks as pure functions: for every check one input that passes and one that fails (SKIP where the
check has one). No training, no data: each test builds the results the check reads."""

import math

import pandas as pd
import pytest
import torch

from shared.analysis import confusion_fit_signals
from shared.report import FAIL, PASS, SKIP
from week03_cifar import checks
from week03_cifar.checks import BaselineBudget, BaselineCurve, SpeedRuns, VariantScores
from week03_cifar.experiments import EvalModeCheck

LN10 = math.log(10)


# ---- baseline -----------------------------------------------------------------------------------------------------

def _curve(**kw):
    base = {"first_loss": 2.35, "first_mean": 2.14, "last_mean": 1.10, "window": 20, "val_acc": 0.61, "num_classes": 10}
    return BaselineCurve(**{**base, **kw})


def test_baseline_passes_when_it_starts_at_chance_and_learns():
    assert checks.check_baseline(_curve(), 0.75, 0.1, 0.2).status == PASS


@pytest.mark.parametrize("bad", [
    {"first_loss": LN10 * 128},  # summed instead of averaged loss: not ln 10 at the start
    {"last_mean": 2.10},  # the loss barely moved (2% < 10%)
    {"last_mean": 2.50},  # the loss went up
    {"val_acc": 0.11},  # chance-level val accuracy
    {"last_mean": float("nan")},  # diverged
])
def test_baseline_fails_on_a_broken_run(bad):
    c = checks.check_baseline(_curve(**bad), 0.75, 0.1, 0.2)
    assert c.status == FAIL, bad


# ---- ablations ----------------------------------------------------------------------------------------------------

def _v(name, *acc, seeds=None):
    return VariantScores(name, tuple(seeds if seeds is not None else range(len(acc))), tuple(acc))


def test_decide_names_a_winner_only_beyond_the_larger_seed_range():
    clear = checks.decide([_v("adamw", 0.590, 0.594), _v("sgd", 0.608, 0.604)])
    assert clear.winner == "sgd"
    assert clear.margin == pytest.approx(1.4)
    assert clear.spread == pytest.approx(0.4)
    tie = checks.decide([_v("all_on", 0.608, 0.640), _v("none", 0.641, 0.611)])  # +0.2 pp, ranges 3.2 and 3.0 pp
    assert tie.best == "none"
    assert tie.winner is None
    assert checks.verdict(tie).startswith("tie: none leads all_on by 0.20 pp, inside the seed spread 3.20 pp")


def test_ablations_pass_with_two_seeds_whether_they_name_a_winner_or_a_tie():
    groups = {"optimizer": [_v("adamw", 0.59, 0.594), _v("sgd", 0.608, 0.604)],
              "regularisation": [_v("all_on", 0.608, 0.640), _v("none", 0.641, 0.611)]}
    c = checks.check_ablations(groups)
    assert c.status == PASS
    assert "optimizer: sgd wins by 1.40 pp over adamw (seed spread 0.40 pp)" in c.measured
    assert "regularisation: tie" in c.measured


@pytest.mark.parametrize("groups", [
    {"optimizer": [_v("adamw", 0.59), _v("sgd", 0.61)]},  # one seed: the spread is not measured
    {"optimizer": [_v("adamw", 0.59, 0.60, seeds=[0, 0]), _v("sgd", 0.61, 0.62, seeds=[0, 0])]},  # the same seed twice
    {"optimizer": [_v("sgd", 0.61, 0.62)]},  # nothing to compare with
    {"optimizer": [_v("adamw", 0.59, float("nan")), _v("sgd", 0.61, 0.62)]},  # a diverged run
    {},  # no results at all
])
def test_ablations_fail_when_the_spread_or_a_result_is_missing(groups):
    assert checks.check_ablations(groups).status == FAIL


# ---- eval mode ----------------------------------------------------------------------------------------------------

def _ev(**kw):
    base = {"n_images": 256, "max_train_eval_diff": 2.05, "eval_repeat_equal": True, "running_stats_unchanged": True,
            "mode_restored": True, "evaluate_loss": 1.07712, "eval_mode_loss": 1.07712, "train_mode_loss": 1.3}
    return EvalModeCheck(**{**base, **kw})


def test_eval_mode_passes_when_evaluate_uses_the_running_statistics():
    assert checks.check_eval_mode(_ev()).status == PASS


@pytest.mark.parametrize("bad", [
    {"evaluate_loss": 1.3},  # evaluate() forgot model.eval(): it reports the batch-statistics loss
    {"running_stats_unchanged": False},  # evaluate() moved the running statistics
    {"mode_restored": False},  # evaluate() left the model in eval mode for the next training step
    {"max_train_eval_diff": 0.0},  # no live BatchNorm: the check would prove nothing
    {"eval_repeat_equal": False},  # eval mode is not deterministic
])
def test_eval_mode_fails_on_each_way_evaluation_can_go_wrong(bad):
    assert checks.check_eval_mode(_ev(**bad)).status == FAIL


# ---- error analysis -----------------------------------------------------------------------------------------------

def test_errors_count_only_pairs_with_a_signal():
    pairs = pd.DataFrame({"count": [20, 15, 40], "signal": ["underfitting", "overfitting", ""]})
    c = checks.check_errors_categorised(pairs, 30)
    assert c.status == PASS
    assert c.measured.startswith("35 of 75 test errors")
    c = checks.check_errors_categorised(pairs.assign(signal=["underfitting", "", ""]), 30)
    assert c.status == FAIL  # 75 errors, but only 20 tied to a signal
    assert c.measured.startswith("20 of 75")


def test_errors_from_confusion_matrices_pass_and_fail_by_their_signals():
    classes = ["cat", "dog"]
    cm_test = torch.tensor([[60, 40], [5, 95]])  # cat -> dog 40 of 100, dog -> cat 5 of 100
    confused_on_train = torch.tensor([[65, 35], [1, 99]])  # cat -> dog on train too: underfitting, 40 errors
    pairs = confusion_fit_signals(cm_test, confused_on_train, classes)
    assert pairs.set_index("true").signal.to_dict() == {"cat": "underfitting", "dog": ""}  # 5 vs 1: too few to tell
    assert checks.check_errors_categorised(pairs, 30).status == PASS
    few_on_train = torch.tensor([[98, 2], [1, 99]])  # 2 training images: z(40% vs 2%) is large -> overfitting
    assert confusion_fit_signals(cm_test, few_on_train, classes).signal.iloc[0] == "overfitting"
    sparse_test = torch.tensor([[90, 10], [5, 95]])  # 15 errors in all: fewer than 30 to categorise
    assert checks.check_errors_categorised(confusion_fit_signals(sparse_test, confused_on_train, classes),
                                           30).status == FAIL
    no_errors = confusion_fit_signals(torch.eye(2, dtype=torch.long) * 50, confused_on_train, classes)
    assert checks.check_errors_categorised(no_errors, 30).status == FAIL


# ---- speed track --------------------------------------------------------------------------------------------------

def _speed(**kw):
    base = {"model": "resnet9", "epochs": 3, "train_images": 8000, "final_test_acc": (0.62,), "best_test_acc": (0.62,),
            "time_to_target_s": (None,)}
    return SpeedRuns(**{**base, **kw})


def _base(**kw):
    base = {"model": "cnn_small", "epochs": 3, "train_images": 8000, "test_acc": 0.55, "seed_range_pp": 0.8}
    return BaselineBudget(**{**base, **kw})


def test_speed_target_is_a_skip_on_cpu_and_judged_on_gpu():
    cpu = checks.check_speed_target(_speed(), 0.94, on_gpu=False)
    assert cpu.status == SKIP
    assert cpu.reason == "needs a GPU"
    assert "0.6200" in cpu.measured  # what the CPU reached is still reported
    assert checks.check_speed_target(_speed(), 0.94, on_gpu=True).status == FAIL
    hit = _speed(epochs=24, train_images=45000, best_test_acc=(0.941, 0.943), final_test_acc=(0.94, 0.942),
                 time_to_target_s=(8.1, 8.3))
    assert checks.check_speed_target(hit, 0.94, on_gpu=True).status == PASS


def test_speed_beats_baseline_at_equal_budgets_by_more_than_its_seed_range():
    assert checks.check_speed_vs_baseline(_speed(), _base(), on_gpu=False).status == PASS  # +7 pp > 0.8 pp


@pytest.mark.parametrize("base", [
    _base(test_acc=0.615),  # +0.5 pp: within the baseline's seed range
    _base(test_acc=0.65),  # the baseline is better
    _base(epochs=5),  # more epochs for the baseline: not a like-for-like comparison
    _base(train_images=4000),  # other images
    _base(seed_range_pp=float("nan")),  # the baseline's spread was not measured
])
def test_speed_vs_baseline_fails_on_cpu_within_noise_or_at_unequal_budgets(base):
    assert checks.check_speed_vs_baseline(_speed(), base, on_gpu=False).status == FAIL


def test_speed_vs_baseline_is_a_skip_on_a_gpu_profile_with_its_own_schedule():
    c = checks.check_speed_vs_baseline(_speed(epochs=24, train_images=45000), _base(epochs=15, train_images=45000),
                                       on_gpu=True)
    assert c.status == SKIP
    assert "24 vs 15 epochs" in c.reason
