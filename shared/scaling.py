"""Compute-optimal model size from IsoFLOP curves (Chinchilla's approach 2, Hoffmann et al. 2022,
https://arxiv.org/abs/2203.15556, section 3.2).

For each compute budget C, several model sizes N are trained on D = C / (6 N) tokens. A parabola in log N fitted to
their final losses has its minimum at N_opt(C); power laws ``N_opt = k_N C^a`` and ``D_opt = k_D C^b`` are then
fitted across budgets (least squares in log-log space), and ``L_min = k_L C^-alpha`` for the loss. The exponents'
uncertainty comes from a bootstrap over the runs of each budget (resampled with replacement, parabolas and power
laws refitted; draws that cannot define a minimum are dropped and counted).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


class FitError(ValueError):
    """The points cannot be fitted (too few, or a parabola that opens downward: no minimum)."""


@dataclass(frozen=True)
class IsoFLOPFit:
    """The parabola ``L = c2 (ln N)^2 + c1 ln N + c0`` of one budget and its minimum."""

    budget: float  # C, FLOPs
    c2: float
    c1: float
    c0: float
    n_opt: float  # exp(-c1 / (2 c2))
    loss_min: float  # the parabola at n_opt
    inside: bool  # n_opt lies within the sizes trained (an extrapolated minimum is less trustworthy)

    @property
    def d_opt(self) -> float:
        """Tokens at the optimum, D = C / (6 N_opt)."""
        return self.budget / (6.0 * self.n_opt)


def fit_isoflop(budget: float, n_params: Sequence[float], losses: Sequence[float]) -> IsoFLOPFit:
    """Fit one IsoFLOP curve.

    Raises:
        FitError: fewer than 3 distinct sizes, or the parabola has no minimum (c2 <= 0).
    """
    x, y = np.log(np.asarray(n_params, dtype=float)), np.asarray(losses, dtype=float)
    if len(np.unique(x)) < 3:
        raise FitError(f"budget {budget:.3g}: an IsoFLOP parabola needs >= 3 distinct model sizes, got "
                       f"{len(np.unique(x))}")
    c2, c1, c0 = np.polyfit(x, y, 2)
    if c2 <= 0:
        raise FitError(f"budget {budget:.3g}: the losses {list(np.round(y, 4))} over sizes "
                       f"{[int(n) for n in n_params]} curve downward (no minimum): widen the range of model sizes")
    x_opt = -c1 / (2 * c2)
    return IsoFLOPFit(budget, float(c2), float(c1), float(c0), float(math.exp(x_opt)),
                      float(c2 * x_opt**2 + c1 * x_opt + c0), bool(x.min() <= x_opt <= x.max()))


@dataclass(frozen=True)
class PowerLaw:
    """``y = k x^exponent``, fitted by least squares on (ln x, ln y)."""

    k: float
    exponent: float

    def __call__(self, x: float) -> float:
        return self.k * x**self.exponent


def fit_power_law(x: Sequence[float], y: Sequence[float]) -> PowerLaw:
    """Least squares on ``ln y = ln k + exponent ln x``.

    Raises:
        FitError: fewer than 2 distinct x, or a value <= 0.
    """
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if (xa <= 0).any() or (ya <= 0).any():
        raise FitError("a power law needs positive x and y")
    if len(np.unique(xa)) < 2:
        raise FitError("a power law needs >= 2 distinct x")
    slope, intercept = np.polyfit(np.log(xa), np.log(ya), 1)
    return PowerLaw(float(math.exp(intercept)), float(slope))


@dataclass(frozen=True)
class ScalingFit:
    """IsoFLOP minima across budgets and the power laws through them, with bootstrap intervals."""

    curves: list[IsoFLOPFit]
    n_opt: PowerLaw  # N_opt = k C^a
    d_opt: PowerLaw  # D_opt = k C^b
    loss: PowerLaw  # L_min = k C^(-alpha): exponent = -alpha
    a_interval: tuple[float, float]  # bootstrap percentile interval of a
    b_interval: tuple[float, float]
    alpha_interval: tuple[float, float]
    draws: int  # bootstrap draws that could be fitted
    draws_tried: int
    level: float  # of the intervals, e.g. 0.9
    n_opt_draws: tuple[tuple[float, float], ...] = ()  # (k, a) of N_opt = k C^a per bootstrap draw
    excluded: tuple[tuple[float, str], ...] = ()  # (budget, why): curves without a minimum, left out of the fit

    def n_opt_interval(self, budget: float) -> tuple[float, float]:
        """The bootstrap interval of N_opt at ``budget`` (at the fit's level)."""
        if not self.n_opt_draws:
            return (float("nan"), float("nan"))
        values = [k * budget**a for k, a in self.n_opt_draws]
        lo, hi = 100 * (1 - self.level) / 2, 100 * (1 + self.level) / 2
        return float(np.percentile(values, lo)), float(np.percentile(values, hi))

    @property
    def tokens_per_param(self) -> list[float]:
        """D_opt / N_opt at each budget (Chinchilla: about 20)."""
        return [c.d_opt / c.n_opt for c in self.curves]


def _fit_all(runs: Mapping[float, Sequence[tuple[float, float]]]) -> tuple[list[IsoFLOPFit], PowerLaw, PowerLaw, PowerLaw]:
    curves = [fit_isoflop(c, [n for n, _ in pts], [loss for _, loss in pts]) for c, pts in sorted(runs.items())]
    cs = [c.budget for c in curves]
    return (curves, fit_power_law(cs, [c.n_opt for c in curves]), fit_power_law(cs, [c.d_opt for c in curves]),
            fit_power_law(cs, [c.loss_min for c in curves]))


def fit_scaling(runs: Mapping[float, Sequence[tuple[float, float]]], n_boot: int = 2000, level: float = 0.9,
                seed: int = 0) -> ScalingFit:
    """Fit every IsoFLOP curve of ``runs`` (budget C -> [(N, final loss), ...]) and the power laws through their
    minima; bootstrap intervals from ``n_boot`` resamplings of each budget's runs. A budget whose curve has no
    minimum (its sizes all lie on one side of the optimum) is left out and named in ``excluded``.

    Raises:
        FitError: fewer than 2 budgets with a minimum.
    """
    if len(runs) < 2:
        raise FitError(f"a scaling law needs >= 2 compute budgets, got {len(runs)}")
    excluded: list[tuple[float, str]] = []
    for c, pts in sorted(runs.items()):
        try:
            fit_isoflop(c, [n for n, _ in pts], [loss for _, loss in pts])
        except FitError as e:
            excluded.append((c, str(e)))
    if len(runs) - len(excluded) < 2:
        raise FitError(f"fewer than 2 budgets have an IsoFLOP minimum: {'; '.join(e for _, e in excluded)}")
    runs = {c: pts for c, pts in runs.items() if c not in {b for b, _ in excluded}}
    curves, n_law, d_law, l_law = _fit_all(runs)
    rng = np.random.default_rng(seed)
    a_s, b_s, alpha_s, draws = [], [], [], []
    for _ in range(n_boot):
        sample = {c: [pts[i] for i in rng.integers(0, len(pts), len(pts))] for c, pts in runs.items()}
        try:
            _, n_b, d_b, l_b = _fit_all(sample)
        except FitError:
            continue
        a_s.append(n_b.exponent)
        draws.append((n_b.k, n_b.exponent))
        b_s.append(d_b.exponent)
        alpha_s.append(-l_b.exponent)
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2

    def interval(v: list[float]) -> tuple[float, float]:
        return (float(np.percentile(v, lo)), float(np.percentile(v, hi))) if v else (float("nan"), float("nan"))

    return ScalingFit(curves, n_law, d_law, l_law, interval(a_s), interval(b_s), interval(alpha_s), len(a_s), n_boot,
                      level, tuple(draws), tuple(excluded))
