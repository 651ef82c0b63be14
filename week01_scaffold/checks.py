"""Week 1's checks: pure functions from the runs' numbers to a :class:`shared.report.Check` (each is fed a failing
input in ``tests/test_checks.py``)."""

from __future__ import annotations

import statistics

from shared.report import Check
from shared.stats import Comparison

CHANCE = 0.10  # ten balanced classes


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def loss_decreases(first: float, last: float, seed: int) -> Check:
    """Mean train loss of the last window is below the first window's (the loop learns at all)."""
    return Check.judge(f"loss decreases over steps (seed {seed})", last < first,
                       f"mean loss first window {first:.4f} -> last window {last:.4f}", "last < first")


def above_chance(accs: list[float]) -> Check:
    """Every seed's final val accuracy beats guessing one of ten classes."""
    return Check.judge("val acc > 10% (random guessing)", bool(accs) and min(accs) > CHANCE,
                       f"min over {len(accs)} seeds {_pct(min(accs)) if accs else 'n/a'}", f"> {_pct(CHANCE)}")


def reaches_accuracy(accs: list[float], target: float) -> Check:
    """Mean final val accuracy over seeds reaches what softmax regression is known to reach on MNIST (~92%)."""
    mean = statistics.fmean(accs) if accs else float("nan")
    return Check.judge(f"val acc >= {_pct(target)} (softmax regression)", bool(accs) and mean >= target,
                       f"mean final val acc {_pct(mean)}", f">= {_pct(target)}")


def reload_exact(recorded: dict[str, float], reloaded: dict[str, float]) -> Check:
    """The best checkpoint, loaded into a fresh model, gives bit-identical val loss and accuracy."""
    exact = all(recorded[k] == reloaded[k] for k in ("loss", "acc"))
    return Check.judge("reloaded best checkpoint reproduces val metrics exactly", exact,
                       f"loss {reloaded['loss']!r} vs {recorded['loss']!r}, acc {reloaded['acc']!r} vs "
                       f"{recorded['acc']!r}", "bitwise equal")


def test_accuracy(test: dict[str, float], floor: float) -> Check:
    """The held-out test accuracy of the best checkpoint, measured once, is close to val (no selection leak)."""
    return Check.judge("test accuracy of the best checkpoint reported", test["acc"] >= floor,
                       f"test acc {_pct(test['acc'])} (n={test['n']})", f">= {_pct(floor)}")


test_accuracy.__test__ = False  # a check, not a pytest test


def seeds_consistent(accs: list[float], trends: list[tuple[float, float]], max_std: float, min_seeds: int = 3) -> Check:
    """At least ``min_seeds`` seeds, their final val accuracies within ``max_std`` (sample std) and every seed's
    loss decreasing."""
    std = statistics.stdev(accs) if len(accs) > 1 else float("nan")
    down = sum(b < a for a, b in trends)
    ok = len(accs) >= min_seeds and std <= max_std and down == len(trends)
    return Check.judge(f"{min_seeds} seeds show consistent trends", ok,
                       f"{len(accs)} seeds, std {100 * std:.3f} pp; loss decreased in {down}/{len(trends)} seeds",
                       f">= {min_seeds} seeds, std <= {100 * max_std:.2f} pp and loss decreases for every seed")


def lr_ablation_brackets(cmp: Comparison, verdict: dict[float, str]) -> Check:
    """The LR ablation shows both failure modes around its best lr: some smaller lr *undershoots* and some larger
    one *overshoots*, each losing to the best by more than the seed spread (``verdict`` from
    ``report.classify_lrs``). A single best lr is named only when it leads the runner-up by more than the spread
    (see :mod:`shared.stats`); otherwise the best lrs are a tie, reported as one. Fails on fewer than 2 seeds."""
    under = [lr for lr, v in verdict.items() if v == "undershoot"]
    over = [lr for lr, v in verdict.items() if v == "overshoot"]
    best = [lr for lr, v in verdict.items() if v in ("best", "tied best", "tie with best")]
    ok = cmp.min_seeds >= 2 and bool(under) and bool(over)
    top = cmp.describe(fmt=lambda x: f"{100 * x:.2f}", unit=" pp", name=lambda lr: f"lr {lr:g}")
    return Check.judge("LR ablation brackets the best lr", ok,
                       f"{top}; best{'' if cmp.decided else ' (tied)'}: {', '.join(f'{x:g}' for x in sorted(best))}; "
                       f"undershoot: {', '.join(f'{x:g}' for x in sorted(under)) or 'none'}; overshoot: "
                       f"{', '.join(f'{x:g}' for x in sorted(over)) or 'none'}",
                       ">= 2 seeds per lr; a smaller and a larger lr each lose to the best by more than the seed "
                       "range (max - min); one best is named only beyond that range, else a tie")
