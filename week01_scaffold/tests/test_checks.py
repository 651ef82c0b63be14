"""Every week-1 check, fed one passing and one failing result."""

from shared.stats import compare
from week01_scaffold import checks


def test_loss_decreases():
    assert checks.loss_decreases(0.6, 0.2, 0).status == "PASS"
    assert checks.loss_decreases(0.6, 0.7, 0).status == "FAIL"


def test_above_chance():
    assert checks.above_chance([0.92, 0.91]).status == "PASS"
    assert checks.above_chance([0.92, 0.09]).status == "FAIL"
    assert checks.above_chance([]).status == "FAIL"


def test_reaches_accuracy():
    assert checks.reaches_accuracy([0.92, 0.921], 0.91).status == "PASS"
    assert checks.reaches_accuracy([0.90, 0.905], 0.91).status == "FAIL"


def test_reload_exact():
    a = {"loss": 0.2869, "acc": 0.9234}
    assert checks.reload_exact(a, dict(a)).status == "PASS"
    assert checks.reload_exact(a, {"loss": 0.2869 + 1e-12, "acc": 0.9234}).status == "FAIL"


def test_test_accuracy():
    assert checks.test_accuracy({"acc": 0.925, "n": 10000}, 0.90).status == "PASS"
    assert checks.test_accuracy({"acc": 0.85, "n": 10000}, 0.90).status == "FAIL"


def test_seeds_consistent():
    down = [(0.6, 0.2)] * 3
    assert checks.seeds_consistent([0.921, 0.922, 0.923], down, 0.005).status == "PASS"
    assert checks.seeds_consistent([0.90, 0.92, 0.94], down, 0.005).status == "FAIL"  # spread too wide
    assert checks.seeds_consistent([0.921, 0.922, 0.923], [(0.6, 0.2), (0.6, 0.7), (0.6, 0.2)], 0.005).status == "FAIL"
    assert checks.seeds_consistent([0.921, 0.922], down[:2], 0.005).status == "FAIL"  # fewer than three seeds


def test_lr_ablation_brackets_the_best_lr_and_names_a_winner_only_outside_the_seed_spread():
    from week01_scaffold.report import classify_lrs

    def run(scores):
        cmp = compare(scores)
        return cmp, checks.lr_ablation_brackets(cmp, classify_lrs(cmp))

    cmp, c = run({10.0: [0.85, 0.86], 1.0: [0.914, 0.916], 0.1: [0.919, 0.920], 0.01: [0.90, 0.901]})
    assert c.status == "PASS"
    assert cmp.winner == 0.1
    cmp, c = run({10.0: [0.85, 0.86], 1.0: [0.915, 0.921], 0.1: [0.919, 0.920], 0.01: [0.90, 0.901]})
    assert c.status == "PASS"  # 1 and 0.1 tie, and the tie is bracketed
    assert cmp.winner is None
    assert "tie" in c.measured
    assert run({1.0: [0.915, 0.921], 0.1: [0.919, 0.920], 0.01: [0.90, 0.901]})[1].status == "FAIL"  # no overshoot
    assert run({1.0: [0.80, 0.81], 0.1: [0.919, 0.920], 0.01: [0.918, 0.921]})[1].status == "FAIL"  # no undershoot
    assert run({1.0: [0.80], 0.1: [0.95], 0.01: [0.90]})[1].status == "FAIL"  # one seed
