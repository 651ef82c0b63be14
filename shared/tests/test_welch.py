"""Welch's t-test by hand against scipy's ttest_ind(equal_var=False); Hedges' g by its formula."""

import math

import pytest
from scipy import stats as st

from shared.stats import welch

SAMPLES = [([4.61, 4.63, 4.60], [4.70, 4.66, 4.72]), ([1.0, 2.0, 3.0, 4.0], [2.5, 2.7]),
           ([5.0, 5.1, 4.9], [5.0, 5.2, 4.8, 5.05])]


@pytest.mark.parametrize(("a", "b"), SAMPLES)
def test_t_df_and_p_equal_scipy(a, b):
    ours = welch(a, b)
    ref = st.ttest_ind(a, b, equal_var=False)
    assert ours.t == pytest.approx(ref.statistic, rel=1e-12)
    assert ours.p == pytest.approx(ref.pvalue, rel=1e-9)
    assert ours.df == pytest.approx(ref.df, rel=1e-12)


def test_hedges_g_and_significance():
    a, b = SAMPLES[0]
    w = welch(a, b)
    pooled = math.sqrt((2 * st.tvar(a) + 2 * st.tvar(b)) / 4)
    assert w.hedges_g == pytest.approx((sum(a) / 3 - sum(b) / 3) / pooled * (1 - 3 / (4 * 6 - 9)))
    assert w.significant()  # clearly separated
    assert not welch(*SAMPLES[2]).significant()  # overlapping


def test_degenerate_samples():
    assert welch([1.0, 1.0], [1.0, 1.0]).p == 1.0
    zero = welch([1.0, 1.0], [2.0, 2.0])
    assert (zero.p, zero.t) == (0.0, -math.inf)
    with pytest.raises(ValueError, match=">= 2 values per sample, got 1 and 3"):
        welch([1.0], [1.0, 2.0, 3.0])
