"""Comparing variants measured over several seeds: a winner only when its lead is larger than the seed noise.

An ablation that runs each variant once cannot tell a real effect from the seed-to-seed spread. Here every variant
has ≥ 2 seeds; the best mean wins only when its margin over the runner-up's mean exceeds the larger of the two
variants' seed ranges (max − min). With two seeds the range is the only spread there is (a t-test with one degree
of freedom says nothing useful), and it is conservative: two variants whose seed ranges overlap are a tie.
"""

from __future__ import annotations

import statistics
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Comparison:
    """The outcome of :func:`compare`.

    ``best`` has the best mean score; ``winner`` is ``best`` when its margin clears ``spread``, else ``None`` (a
    tie). ``margin`` and ``spread`` are in the scores' units, ``margin >= 0`` (the best's lead over the runner-up).
    ``min_seeds`` is the fewest seeds any variant had: below 2 the spread is unmeasured and nothing wins.
    """

    best: Hashable
    runner_up: Hashable | None
    means: dict
    ranges: dict
    margin: float
    spread: float
    min_seeds: int

    @property
    def winner(self) -> Hashable | None:
        return self.best if self.decided else None

    @property
    def decided(self) -> bool:
        """True when a runner-up exists, every variant has ≥ 2 seeds and the margin exceeds the spread."""
        return self.runner_up is not None and self.min_seeds >= 2 and self.margin > self.spread

    def describe(self, fmt=lambda x: f"{x:.4g}", unit: str = "", name=str) -> str:
        """One sentence: ``"lr 0.1 wins by 0.46 pp (seed spread 0.07 pp)"`` or the tie and the margin it needed."""
        if self.runner_up is None:
            return f"{name(self.best)} is the only variant: nothing to compare"
        if self.min_seeds < 2:
            return (f"{name(self.best)} leads {name(self.runner_up)} by {fmt(self.margin)}{unit}, but with one seed "
                    "the seed spread is unmeasured: no winner (run >= 2 seeds per variant)")
        if self.decided:
            return (f"{name(self.best)} wins by {fmt(self.margin)}{unit} over {name(self.runner_up)} "
                    f"(seed spread {fmt(self.spread)}{unit})")
        return (f"tie: {name(self.best)} leads {name(self.runner_up)} by {fmt(self.margin)}{unit}, inside the seed "
                f"spread {fmt(self.spread)}{unit} (a winner needs a margin > {fmt(self.spread)}{unit})")


def compare(scores: Mapping[Hashable, Sequence[float]], higher_is_better: bool = True) -> Comparison:
    """Rank variants by their mean score over seeds and decide whether the best one really wins.

    Args:
        scores: variant -> one score per seed (e.g. final val accuracy per seed).
        higher_is_better: False for losses.

    Raises:
        ValueError: no variants, or a variant without scores.
    """
    if not scores:
        raise ValueError("compare() needs at least one variant")
    empty = [k for k, v in scores.items() if len(v) == 0]
    if empty:
        raise ValueError(f"variants without scores: {empty}")
    means = {k: statistics.fmean(v) for k, v in scores.items()}
    ranges = {k: max(v) - min(v) for k, v in scores.items()}
    order = sorted(means, key=lambda k: means[k], reverse=higher_is_better)
    best = order[0]
    runner_up = order[1] if len(order) > 1 else None
    margin = abs(means[best] - means[runner_up]) if runner_up is not None else 0.0
    spread = max(ranges[best], ranges[runner_up]) if runner_up is not None else ranges[best]
    return Comparison(best, runner_up, means, ranges, margin, spread, min(len(v) for v in scores.values()))


@dataclass(frozen=True)
class WelchTest:
    """Welch's two-sample t-test of mean(a) − mean(b) (unequal variances; Welch 1947,
    https://doi.org/10.2307/2332510), with Hedges' g as the effect size (Cohen's d on the pooled standard deviation,
    times the small-sample correction 1 − 3 / (4 (n_a + n_b) − 9); Hedges 1981)."""

    mean_a: float
    mean_b: float
    diff: float  # mean_a − mean_b
    t: float
    df: float  # Welch–Satterthwaite degrees of freedom
    p: float  # two-sided
    hedges_g: float
    n_a: int
    n_b: int

    def significant(self, alpha: float = 0.05) -> bool:
        return self.p < alpha


def welch(a: Sequence[float], b: Sequence[float]) -> WelchTest:
    """Welch's t-test of two samples (e.g. one variant's val loss over seeds against another's).

    ``t = (mean_a − mean_b) / sqrt(s_a²/n_a + s_b²/n_b)`` with sample variances s², and
    ``df = (s_a²/n_a + s_b²/n_b)² / ((s_a²/n_a)²/(n_a − 1) + (s_b²/n_b)²/(n_b − 1))``; ``p`` from Student's t with
    ``df`` degrees of freedom (``scipy.stats.t``). Two samples without any spread give ``t = ±inf`` and ``p = 0``
    when their means differ, ``p = 1`` when they are equal.

    Raises:
        ValueError: a sample with fewer than 2 values.
    """
    from scipy import stats as st  # imported where used

    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"Welch's t-test needs >= 2 values per sample, got {len(a)} and {len(b)}")
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    va, vb = statistics.variance(a), statistics.variance(b)
    na, nb = len(a), len(b)
    se2 = va / na + vb / nb
    pooled = (((na - 1) * va + (nb - 1) * vb) / (na + nb - 2)) ** 0.5
    g = ((ma - mb) / pooled if pooled > 0 else float("inf") * (1 if ma > mb else -1 if ma < mb else 0))
    g *= 1 - 3 / (4 * (na + nb) - 9)
    if se2 == 0:
        t, df, p = (0.0, float(na + nb - 2), 1.0) if ma == mb else (float("inf") * (1 if ma > mb else -1),
                                                                    float(na + nb - 2), 0.0)
        return WelchTest(ma, mb, ma - mb, t, df, p, g if ma != mb else 0.0, na, nb)
    t = (ma - mb) / se2**0.5
    df = se2**2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    p = float(2 * st.t.sf(abs(t), df))
    return WelchTest(ma, mb, ma - mb, t, df, p, g, na, nb)


@dataclass(frozen=True)
class PairedTest:
    """A paired comparison of two models scored on the same items: b − a per item.

    ``wins`` counts items where b scores higher, ``losses`` where a does, ``ties`` the rest. ``p_greater`` is the
    one-sided p-value of "b scores higher than a", ``p_less`` of "b scores lower". ``test`` names the test used:
    the exact sign test on the discordant items (= exact McNemar) for 0/1 scores, else the Wilcoxon signed-rank test
    (zero differences dropped; Wilcoxon 1945, https://doi.org/10.2307/3001968).
    """

    n: int
    mean_a: float
    mean_b: float
    wins: int
    losses: int
    ties: int
    p_greater: float
    p_less: float
    test: str

    @property
    def diff(self) -> float:
        return self.mean_b - self.mean_a


def paired(a: Sequence[float], b: Sequence[float]) -> PairedTest:
    """Paired one-sided tests of b against a, item by item (see :class:`PairedTest`).

    With no discordant item (all ties) both p-values are 1.

    Raises:
        ValueError: the two sequences differ in length or are empty.
    """
    from scipy import stats as st  # imported where used

    if len(a) != len(b) or not a:
        raise ValueError(f"a paired test needs two equally long, non-empty score lists, got {len(a)} and {len(b)}")
    d = [float(y) - float(x) for x, y in zip(a, b, strict=True)]
    wins, losses = sum(x > 0 for x in d), sum(x < 0 for x in d)
    binary = all(float(v) in (0.0, 1.0) for v in (*a, *b))
    test = "exact sign test" if binary else "Wilcoxon signed-rank"
    if wins + losses == 0:
        p_g = p_l = 1.0
    elif binary:
        p_g = float(st.binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue)
        p_l = float(st.binomtest(wins, wins + losses, 0.5, alternative="less").pvalue)
    else:
        nz = [x for x in d if x != 0]
        p_g = float(st.wilcoxon(nz, alternative="greater").pvalue)
        p_l = float(st.wilcoxon(nz, alternative="less").pvalue)
    return PairedTest(len(d), statistics.fmean(a), statistics.fmean(b), wins, losses, len(d) - wins - losses,
                      p_g, p_l, test)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979, https://www.jstor.org/stable/4615733), in the input order:
    reject hypothesis i at family-wise level alpha when ``holm(p)[i] < alpha``."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adj, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adj[i] = running
    return adj
