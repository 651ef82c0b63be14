"""Week 3's checks: pure functions of the run's results (plain values, small dataclasses, a DataFrame), each
returning a :class:`~shared.report.Check`. ``report.py`` extracts the inputs from the runs and adds the checks;
``tests/test_checks.py`` feeds each one a passing and a failing input.

The ablation rule (:func:`decide`, which is :func:`shared.stats.compare`): a variant is named the winner only when
its mean val accuracy over the seeds beats the runner-up's mean by more than the larger of the two variants' seed
ranges (max - min over seeds); otherwise the ablation is a tie. With two seeds the range is the one measure of
seed-to-seed spread there is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from shared.report import Check
from shared.stats import Comparison, compare
from week03_cifar.experiments import EvalModeCheck


def _finite(*xs: float) -> bool:
    return all(x is not None and math.isfinite(x) for x in xs)


# ---- 1. the baseline trained ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BaselineCurve:
    """The baseline's training curve, reduced to what its check reads."""

    first_loss: float  # training loss of the first step (before any update had an effect)
    first_mean: float  # mean training loss over the first ``window`` steps
    last_mean: float  # ... and over the last ``window`` steps
    window: int
    val_acc: float  # final val accuracy
    num_classes: int


def check_baseline(b: BaselineCurve, first_loss_tol: float, min_drop: float, min_val_acc: float) -> Check:
    """Starts at chance (first loss ~ ln K), the loss falls by at least ``min_drop`` (relative), val acc >= bar."""
    chance = math.log(b.num_classes)
    ok = (_finite(b.first_loss, b.first_mean, b.last_mean, b.val_acc)
          and abs(b.first_loss - chance) <= first_loss_tol
          and b.last_mean <= (1 - min_drop) * b.first_mean
          and b.val_acc >= min_val_acc)
    drop = 1 - b.last_mean / b.first_mean if _finite(b.first_mean, b.last_mean) and b.first_mean else float("nan")
    return Check.judge(
        "baseline: starts at chance, loss decreases, val acc above chance", ok,
        f"first loss {b.first_loss:.3f} (ln {b.num_classes} = {chance:.3f}); loss {b.first_mean:.3f} -> "
        f"{b.last_mean:.3f} ({drop:.0%} lower); val acc {b.val_acc:.4f}",
        f"|first loss - ln {b.num_classes}| <= {first_loss_tol}; last-{b.window}-step mean <= "
        f"{1 - min_drop:.2f} x first-{b.window}-step mean; val acc >= {min_val_acc}")


# ---- 2. ablation winners against the seed-to-seed spread ----------------------------------------------------------

@dataclass(frozen=True)
class VariantScores:
    """One ablation variant's final val accuracy, once per seed."""

    name: str
    seeds: tuple[int, ...]
    val_acc: tuple[float, ...]  # one per seed, same order

    @property
    def spread_pp(self) -> float:
        """Seed range (max - min) in percentage points; nan with fewer than two seeds (not measured)."""
        return 100 * (max(self.val_acc) - min(self.val_acc)) if len(set(self.seeds)) >= 2 else float("nan")


def decide(scores: list[VariantScores]) -> Comparison:
    """:func:`shared.stats.compare` of the variants' val accuracies in percentage points (the rule above)."""
    return compare({s.name: [100 * a for a in s.val_acc] for s in scores})


def verdict(c: Comparison) -> str:
    """``sgd_nesterov wins by 1.48 pp over adamw (seed spread 0.40 pp)`` or the tie and the margin it needed."""
    return c.describe(fmt=lambda x: f"{x:.2f}", unit=" pp")


def check_ablations(groups: dict[str, list[VariantScores]], min_seeds: int = 2) -> Check:
    """Every ablation has >= 2 variants, each with val accuracies from >= ``min_seeds`` distinct seeds (so the
    spread is measured), all finite; then each names a winner that clears the spread or reports a tie."""
    problems = []
    for g, scores in groups.items():
        if len(scores) < 2:
            problems.append(f"{g}: {len(scores)} variant(s)")
        for s in scores:
            if len(set(s.seeds)) < min_seeds:
                problems.append(f"{g}/{s.name}: {len(set(s.seeds))} seed(s), spread not measured")
            if not s.val_acc or not _finite(*s.val_acc):
                problems.append(f"{g}/{s.name}: missing or non-finite val acc")
    if not groups:
        problems.append("no ablation results")
    verdicts = [f"{g}: {verdict(decide(s))}" for g, s in groups.items() if s and all(v.val_acc for v in s)]
    return Check.judge(
        "ablations: winner only beyond the seed spread, else tie", not problems, "; ".join(problems + verdicts),
        f">= 2 variants x >= {min_seeds} seeds each; winner iff best - runner-up mean val acc > the larger "
        "seed range of the two, else tie")


# ---- 3. BatchNorm's eval mode in the project's evaluation ---------------------------------------------------------

def check_eval_mode(ev: EvalModeCheck, min_diff: float = 1e-4, loss_tol: float = 1e-5) -> Check:
    """BatchNorm is live (batch-statistics and running-statistics logits differ), eval mode is deterministic, and
    the loop's ``evaluate`` returns the running-statistics loss, leaves the statistics alone and restores the mode."""
    matches = _finite(ev.evaluate_loss, ev.eval_mode_loss) and abs(ev.evaluate_loss - ev.eval_mode_loss) <= loss_tol
    ok = ev.max_train_eval_diff > min_diff and ev.eval_repeat_equal and ev.running_stats_unchanged \
        and ev.mode_restored and matches
    return Check.judge(
        "eval uses running statistics", ok,
        f"{ev.n_images} val images: max |batch-stats - running-stats logits| {ev.max_train_eval_diff:.4f}; eval "
        f"repeat identical {ev.eval_repeat_equal}; evaluate() loss {ev.evaluate_loss:.5f} vs running-stats "
        f"{ev.eval_mode_loss:.5f} / batch-stats {ev.train_mode_loss:.5f}; running stats unchanged "
        f"{ev.running_stats_unchanged}; mode restored {ev.mode_restored}",
        f"logits differ by > {min_diff:g}; eval deterministic; |evaluate() loss - running-stats loss| <= {loss_tol:g}; "
        "evaluate() leaves the running stats and the train mode as they were")


# ---- 4. error analysis ---------------------------------------------------------------------------------------------

def check_errors_categorised(pairs: pd.DataFrame, min_errors: int = 30) -> Check:
    """At least ``min_errors`` test errors lie in (true, predicted) pairs that carry a fit signal.

    ``pairs``: one row per confusion pair with ``count`` (test errors) and ``signal`` (``"overfitting"``,
    ``"underfitting"`` or ``""`` for none), as :func:`shared.analysis.confusion_fit_signals` returns.
    """
    kinds = ("overfitting", "underfitting")
    by = {k: (int((pairs.signal == k).sum()), int(pairs["count"][pairs.signal == k].sum())) for k in kinds}
    has = pairs.signal.isin(kinds)
    n, total = int(pairs["count"][has].sum()), int(pairs["count"].sum())
    return Check.judge(
        f">= {min_errors} error cases categorised", n >= min_errors,
        f"{n} of {total} test errors in pairs with a fit signal (overfitting: {by['overfitting'][1]} errors in "
        f"{by['overfitting'][0]} pairs; underfitting: {by['underfitting'][1]} in {by['underfitting'][0]}); "
        f"{total - n} in {int((~has).sum())} pairs without one",
        f">= {min_errors} test errors whose (true, predicted) pair has an over- or underfitting signal measured "
        "against the same pair on training images")


# ---- 5. the speed track -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SpeedRuns:
    """The speed track's seeds."""

    model: str
    epochs: int  # epochs every seed trained
    train_images: int
    final_test_acc: tuple[float, ...]  # one per seed: at the end of the schedule
    best_test_acc: tuple[float, ...]  # one per seed: best epoch
    time_to_target_s: tuple[float | None, ...]  # one per seed; None = target not reached

    @property
    def mean_final(self) -> float:
        return sum(self.final_test_acc) / len(self.final_test_acc) if self.final_test_acc else float("nan")

    @property
    def mean_best(self) -> float:
        return sum(self.best_test_acc) / len(self.best_test_acc) if self.best_test_acc else float("nan")


@dataclass(frozen=True)
class BaselineBudget:
    """The baseline's budget and test accuracy, to set against the speed track's."""

    model: str
    epochs: int
    train_images: int
    test_acc: float
    seed_range_pp: float  # its seed range of val acc in the ablations (nan: not measured)


def check_speed_target(sp: SpeedRuns, target: float, on_gpu: bool) -> Check:
    """The recipe's target (94%) is a GPU-budget claim: judged on a GPU, a SKIP on a CPU (with what it reached)."""
    name, criterion = f"speed track reaches >= {target:.0%} test accuracy", f"mean best test acc >= {target} (GPU)"
    reached = [t for t in sp.time_to_target_s if t is not None]
    measured = (f"{sp.model}, {sp.epochs} epochs on {sp.train_images:,} images: mean best test acc {sp.mean_best:.4f} "
                f"over {len(sp.best_test_acc)} seed(s); time to target "
                + (f"{sum(reached) / len(reached):.1f} s mean" if reached and len(reached) == len(sp.time_to_target_s)
                   else f"not reached by {len(sp.time_to_target_s) - len(reached)} seed(s)"))
    if not on_gpu:
        return Check.skip(name, "needs a GPU", criterion, measured)
    return Check.judge(name, bool(sp.best_test_acc) and sp.mean_best >= target, measured, criterion)


def check_speed_vs_baseline(sp: SpeedRuns, base: BaselineBudget, on_gpu: bool) -> Check:
    """At equal epochs on the same training images, the speed track's final test accuracy beats the baseline's by
    more than the baseline's seed range. Unequal budgets: a FAIL on a CPU (the CPU profile aligns them), a SKIP on
    a GPU (its profile gives the recipe its own schedule; the target is its check)."""
    name = f"{sp.model} beats {base.model} at equal epochs"
    criterion = (f"same epochs and training images; mean final test acc - {base.model} test acc > "
                 f"{base.model}'s seed range of val acc")
    budget = f"{sp.epochs} vs {base.epochs} epochs, {sp.train_images:,} vs {base.train_images:,} images"
    if (sp.epochs, sp.train_images) != (base.epochs, base.train_images):
        if on_gpu:
            return Check.skip(name, f"budgets differ in this profile ({budget}); the GPU check is the target",
                              criterion, budget)
        return Check.judge(name, False, f"budgets differ: {budget}", criterion)
    margin = 100 * (sp.mean_final - base.test_acc)
    ok = _finite(margin, base.seed_range_pp) and margin > base.seed_range_pp
    return Check.judge(
        name, ok,
        f"{budget}: test acc {sp.mean_final:.4f} vs {base.test_acc:.4f} ({margin:+.2f} pp; {base.model} seed range "
        f"{base.seed_range_pp:.2f} pp)", criterion)
