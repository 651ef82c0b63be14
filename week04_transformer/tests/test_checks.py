"""Every week-4 check, fed one passing and one failing result."""

from week04_transformer import checks
from week04_transformer.components import TestCount


def test_component_tests():
    assert checks.component_tests(TestCount(10, 0, 0, 1, 1.0)).status == "PASS"
    assert checks.component_tests(TestCount(10, 1, 0, 0, 1.0)).status == "FAIL"
    assert checks.component_tests(TestCount(10, 0, 1, 0, 1.0)).status == "FAIL"
    assert checks.component_tests(TestCount(0, 0, 0, 0, 0.0)).status == "FAIL"  # nothing ran


def test_untrained_loss():
    assert checks.untrained_loss(4.2, 65).status == "PASS"  # ln 65 = 4.17
    assert checks.untrained_loss(5.0, 65).status == "FAIL"


def test_loss_trends_down():
    first = {"val_loss": 4.2, "train_loss": 4.2}
    assert checks.loss_trends_down(first, {"val_loss": 1.7, "train_loss": 1.5}).status == "PASS"
    assert checks.loss_trends_down(first, {"val_loss": 4.3, "train_loss": 1.5}).status == "FAIL"
    assert checks.loss_trends_down(first, {"val_loss": 1.7, "train_loss": 4.3}).status == "FAIL"


def test_samples_improve():
    assert checks.samples_improve([4.2, 2.1, 1.7]).status == "PASS"
    assert checks.samples_improve([4.2, 1.7, 2.1]).status == "FAIL"
    assert checks.samples_improve([4.2, 1.7]).status == "FAIL"


def test_backends_agree():
    assert checks.backends_agree(1e-7, 1e-5).status == "PASS"
    assert checks.backends_agree(1e-3, 1e-5).status == "FAIL"


def test_val_loss_target():
    assert checks.val_loss_target(1.69, 2.0).status == "PASS"
    assert checks.val_loss_target(2.01, 2.0).status == "FAIL"


def test_time_budget():
    assert checks.time_budget(310, 600).status == "PASS"
    c = checks.time_budget(700, 600, resumed=True)
    assert c.status == "FAIL"
    assert "summed" in c.measured
