"""The IsoFLOP fits recover known exponents from synthetic data (within 5%), and refuse curves without a minimum."""

import math

import numpy as np
import pytest

from shared.scaling import FitError, fit_isoflop, fit_power_law, fit_scaling


def synthetic(a: float, alpha: float, budgets, sizes_per_budget: int = 5, noise: float = 0.0, seed: int = 0):
    """Runs whose IsoFLOP minima lie at N_opt = 1e-3 C^a with L_min = 50 C^-alpha, each curve a parabola in ln N."""
    rng = np.random.default_rng(seed)
    runs = {}
    for c in budgets:
        n_opt, l_min = 1e-3 * c**a, 50 * c**-alpha
        sizes = n_opt * np.exp(np.linspace(-1.5, 1.5, sizes_per_budget))
        runs[c] = [(float(n), float(l_min + 0.08 * math.log(n / n_opt) ** 2 + rng.normal(0, noise))) for n in sizes]
    return runs


def test_one_parabola_has_its_minimum_where_it_was_put():
    sizes = [1e4, 3e4, 1e5, 3e5, 1e6]
    fit = fit_isoflop(1e12, sizes, [2 + 0.1 * (math.log(n) - math.log(7e4)) ** 2 for n in sizes])
    assert fit.n_opt == pytest.approx(7e4, rel=1e-6)
    assert fit.loss_min == pytest.approx(2.0, abs=1e-9)
    assert fit.inside
    assert fit.d_opt == pytest.approx(1e12 / (6 * 7e4))


@pytest.mark.parametrize(("a", "alpha"), [(0.5, 0.05), (0.7, 0.1), (0.35, 0.03)])
def test_exponents_are_recovered_within_5_percent(a, alpha):
    fit = fit_scaling(synthetic(a, alpha, [1e12, 1e13, 1e14, 1e15]), n_boot=200)
    assert fit.n_opt.exponent == pytest.approx(a, rel=0.05)
    assert fit.d_opt.exponent == pytest.approx(1 - a, rel=0.05)  # D = C / 6N
    assert -fit.loss.exponent == pytest.approx(alpha, rel=0.05)


def test_noisy_runs_give_an_interval_around_the_truth():
    fit = fit_scaling(synthetic(0.5, 0.05, [1e12, 1e13, 1e14], noise=0.005, seed=1), n_boot=500)
    lo, hi = fit.a_interval
    assert lo < fit.n_opt.exponent < hi
    assert lo < 0.5 < hi
    assert 0 < fit.draws <= fit.draws_tried == 500
    assert len(fit.tokens_per_param) == 3
    n_lo, n_hi = fit.n_opt_interval(1e13)
    assert n_lo < fit.n_opt(1e13) < n_hi


def test_power_law_and_refusals():
    law = fit_power_law([1, 10, 100], [3, 30, 300])
    assert (law.k, law.exponent) == (pytest.approx(3), pytest.approx(1))
    with pytest.raises(FitError, match="no minimum"):
        fit_isoflop(1e12, [1e4, 1e5, 1e6], [3.0, 3.5, 3.0])
    with pytest.raises(FitError, match=">= 3 distinct model sizes"):
        fit_isoflop(1e12, [1e4, 1e4, 1e5], [3.0, 2.0, 3.0])
    with pytest.raises(FitError, match=">= 2 compute budgets"):
        fit_scaling(synthetic(0.5, 0.05, [1e12]))


def test_a_budget_without_a_minimum_is_left_out_and_named():
    runs = synthetic(0.5, 0.05, [1e12, 1e13, 1e14])
    runs[1e11] = [(1e3, 5.0), (1e4, 5.6), (1e5, 5.9)]  # every size too large for this budget: loss only rises
    fit = fit_scaling(runs, n_boot=50)
    assert [c.budget for c in fit.curves] == [1e12, 1e13, 1e14]
    assert fit.excluded[0][0] == 1e11
    assert "no minimum" in fit.excluded[0][1]
    assert fit.n_opt.exponent == pytest.approx(0.5, rel=0.05)
    runs = {1e11: runs[1e11], 1e12: [(1e3, 5.0), (1e4, 5.6), (1e5, 5.9)], 1e13: synthetic(0.5, 0.05, [1e13])[1e13]}
    with pytest.raises(FitError, match="fewer than 2 budgets have an IsoFLOP minimum"):
        fit_scaling(runs)
