"""The paired item-by-item tests behind week 7's v1-vs-v2 verdict, against values worked out by hand."""

import pytest

from shared.stats import holm, paired


def test_binary_scores_use_the_exact_sign_test_on_discordant_items():
    a = [0, 0, 0, 0, 0, 1, 1, 0]
    b = [1, 1, 1, 1, 1, 1, 0, 0]  # 5 wins, 1 loss, 2 ties
    t = paired(a, b)
    assert (t.wins, t.losses, t.ties, t.test) == (5, 1, 2, "exact sign test")
    # P(X >= 5 | n = 6, 1/2) = (6 + 1) / 64, P(X <= 5) = 63 / 64
    assert t.p_greater == pytest.approx(7 / 64)
    assert t.p_less == pytest.approx(63 / 64)
    assert t.diff == pytest.approx(0.5)


def test_continuous_scores_use_wilcoxon_and_zero_differences_are_dropped():
    t = paired([0.1, 0.2, 0.3, 0.5], [0.2, 0.4, 0.6, 0.5])  # differences 0.1, 0.2, 0.3 and one tie
    assert t.test == "Wilcoxon signed-rank"
    assert t.ties == 1
    assert t.p_greater == pytest.approx(1 / 8)  # exact null: all 2^3 sign patterns equally likely, one has W+ = 6
    assert t.p_less == pytest.approx(1.0)


def test_all_ties_give_p_one_and_bad_input_is_refused():
    t = paired([0.5, 0.5], [0.5, 0.5])
    assert t.p_greater == t.p_less == 1.0
    with pytest.raises(ValueError, match="equally long"):
        paired([1.0], [1.0, 0.0])


def test_holm_step_down():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.6, 0.2]) == pytest.approx([0.6, 0.4])
