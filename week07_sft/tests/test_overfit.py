"""The over-fitting onset and the memorisation rate, on curves and rows made by hand."""

import math

import pytest

from week07_sft.overfit import memorisation_rate, overfit_onset


def _evals(val, train):
    return [{"step": 2 * i, "val_loss": v, "train_loss": t} for i, (v, t) in enumerate(zip(val, train, strict=False))]


def test_the_onset_is_the_val_minimum_followed_by_a_rise():
    on = overfit_onset(_evals([2.0, 1.5, 1.4, 1.6, 1.8], [2.0, 1.2, 0.8, 0.4, 0.1]))
    assert on.step == 4
    assert on.best_val == 1.4
    assert on.train_fell_after
    assert on.rise == pytest.approx((1.8 - 1.4) / 1.4)


def test_no_onset_while_val_still_falls_or_only_wobbles():
    assert overfit_onset(_evals([2.0, 1.5, 1.4, 1.3], [2, 1, 0.5, 0.2])).step is None
    assert overfit_onset(_evals([2.0, 1.5, 1.4, 1.405], [2, 1, 0.5, 0.2])).step is None  # +0.4% < 1%, once
    assert overfit_onset(_evals([2.0, 1.4, 1.403, 1.401, 1.404], [2, 1, 0.5, 0.2, 0.1])).step is None  # wobbles


def test_a_steady_small_climb_is_an_onset():
    # the first cpu log: +0.5% in all, but up at every one of the 4 evals after the minimum
    on = overfit_onset(_evals([2.1296, 2.0685, 2.0710, 2.0754, 2.0783, 2.0792], [1.9, 1.2, 1.08, 1.0, 0.97, 0.96]))
    assert on.step == 2
    assert on.train_fell_after


def test_too_few_evals_or_no_train_loss_is_an_error():
    with pytest.raises(ValueError, match="at least 3"):
        overfit_onset(_evals([2.0, 1.0], [2.0, 1.0]))
    with pytest.raises(ValueError, match="train_eval_examples"):
        overfit_onset([{"step": i, "val_loss": 1.0} for i in range(3)])


def test_memorisation_rate():
    assert memorisation_rate([{"rougeL": 0.95}, {"rougeL": 0.5}, {"rougeL": 0.9}], 0.9) == pytest.approx(2 / 3)
    assert math.isnan(memorisation_rate([], 0.9))
