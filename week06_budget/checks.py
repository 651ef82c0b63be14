"""The plan's checks for week 6, each a pure function of the run's results: numbers in, a ``Check`` out."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from shared.report import Check
from shared.stats import WelchTest


def budget_enforced(runs: Sequence[dict]) -> Check:
    """Every run stopped by the budget its config names, within one step of it: a token budget is never passed and
    is less than one step away; a wall-clock budget is passed by less than the last step took.

    Each run: ``{"name", "budget", "budget_value", "stopped_by", "tokens", "tokens_per_step", "train_time_s",
    "last_step_s"}``."""
    bad = []
    for r in runs:
        if r["stopped_by"] != r["budget"]:
            bad.append(f"{r['name']}: stopped by {r['stopped_by']}, not {r['budget']}")
        elif r["budget"] == "max_tokens" and not (r["budget_value"] - r["tokens_per_step"] < r["tokens"]
                                                  <= r["budget_value"]):
            bad.append(f"{r['name']}: {r['tokens']:,} tokens for a budget of {r['budget_value']:,.0f}")
        elif r["budget"] == "max_seconds" and not (r["train_time_s"] - r["last_step_s"] < r["budget_value"]
                                                   <= r["train_time_s"]):
            bad.append(f"{r['name']}: {r['train_time_s']:.2f} s (last step {r['last_step_s']:.3f} s) for "
                       f"{r['budget_value']:g} s")
    kinds = sorted({r["budget"] for r in runs})
    return Check.judge("budget enforced", bool(runs) and not bad,
                       "; ".join(bad) if bad else f"{len(runs)} runs ({', '.join(kinds)}), each within one step",
                       "stopped by the named budget; tokens in (budget − one step, budget]; seconds passed by less "
                       "than the last step")


def manifests_verified(results: dict[str, str], filters_recorded: int) -> Check:
    """Every manifest a run names verified against its files (``results``: manifest -> "" or the error), and the
    filtered version's manifest records its filters."""
    bad = {m: e for m, e in results.items() if e}
    ok = bool(results) and not bad and filters_recorded > 0
    measured = (f"{len(results)} manifests, every source and packed sha256 matches; B records {filters_recorded} "
                "filters with parameters and removal counts") if ok else (
        "; ".join(f"{m}: {e}" for m, e in bad.items()) or f"{filters_recorded} filters recorded")
    return Check.judge("manifest describes source and filtering", ok, measured,
                       "every run's manifest exists and its hashes match; the filters are recorded")


def versions_differ(docs_a: int, docs_b: int, removed: dict[str, int], dup_rate_a: float, dup_rate_b: float,
                    tokens_a: int, tokens_b: int) -> Check:
    """The filters removed documents and the versions' distributions differ: fewer documents and tokens in B, and a
    lower duplicate rate."""
    total = sum(removed.values())
    ok = total > 0 and docs_b < docs_a and tokens_b < tokens_a and dup_rate_b < dup_rate_a
    return Check.judge("A and B differ", ok,
                       f"{total:,} documents removed ({docs_a:,} → {docs_b:,}; tokens {tokens_a:,} → {tokens_b:,}); "
                       f"duplicate rate {dup_rate_a:.2%} → {dup_rate_b:.2%}",
                       "> 0 removed; B has fewer documents and tokens and a lower duplicate rate")


def val_clean(after: dict[str, int], removed: int, held_out: int) -> Check:
    """After cleaning, no val document has an exact or near duplicate in either version's training documents."""
    ok = bool(after) and all(n == 0 for n in after.values())
    return Check.judge("val shares no document with either train", ok,
                       f"{removed:,} of {held_out:,} held-out documents removed; left with a duplicate in "
                       + ", ".join(f"{k}: {n}" for k, n in after.items()),
                       "0 val documents with a near duplicate in A's or B's training documents")


def ab_significance(test: WelchTest, alpha: float, min_seeds: int = 3) -> Check:
    """Welch's t-test on the versions' val losses was computed on ≥ ``min_seeds`` seeds each and gave a finite p;
    the measured text states the verdict at ``alpha`` (differ, which way and by how much, or do not differ). The
    verdict is the experiment's finding, not the check's: "they do not differ at this budget" is a result too."""
    enough = min(test.n_a, test.n_b) >= min_seeds
    finite = math.isfinite(test.p)
    lower = "B" if test.diff > 0 else "A"
    verdict = (f"they differ at {alpha:g}: {lower} is lower by {abs(test.diff):.4f} nats/token" if test.p < alpha
               else f"they do not differ at {alpha:g}")
    return Check.judge("A vs B significance computed", enough and finite,
                       f"val loss A − B = {test.diff:+.4f} nats/token, Welch t = {test.t:.2f}, df = {test.df:.1f}, "
                       f"p = {test.p:.2g}, Hedges' g = {test.hedges_g:.2f} ({test.n_a} and {test.n_b} seeds): {verdict}",
                       f"≥ {min_seeds} seeds per version and a finite p; the verdict at p < {alpha:g} is stated")


def tradeoff_explained(fit_ok: bool, fit_error: str, n_budgets: int, minima_inside: int, a: float | None,
                       interval: tuple[float, float] | None, skip_reason: str = "", excluded: int = 0) -> Check:
    """The IsoFLOP sweep could be fitted (a minimum per budget, ≥ 2 budgets) and at least one minimum lies inside
    the sizes trained, so the small-vs-large answer rests on an interpolated optimum. ``skip_reason``: see
    :func:`ab_significant`."""
    ok = fit_ok and n_budgets >= 2 and minima_inside >= 1
    measured = (f"{n_budgets} IsoFLOP curves ({excluded} more left out: no minimum), {minima_inside} with the "
                f"minimum inside the sizes trained; "
                f"N_opt ∝ C^{a:.2f} (interval {interval[0]:.2f} to {interval[1]:.2f})"
                if fit_ok and a is not None and interval is not None else f"no fit: {fit_error}")
    name, crit = "model-size trade-off explained from the fit", ("a parabola minimum per budget, ≥ 2 budgets, ≥ 1 "
                                                                 "minimum inside the sizes trained")
    if skip_reason:
        return Check.skip(name, skip_reason, crit, measured)
    return Check.judge(name, ok, measured, crit)


def memo_runs_exist(cited: Sequence[str], registered: set[str]) -> Check:
    """Every run id the memo cites is a record of the results registry."""
    missing = [r for r in cited if r not in registered]
    return Check.judge("memo references runs that exist in the registry", bool(cited) and not missing,
                       f"{len(cited)} runs cited, missing: {missing}" if missing else f"{len(cited)} runs cited, all "
                       "in runs/registry.jsonl", "every cited run id in the registry")


def memo_reproduced(original: float | None, rerun: float | None, skip_reason: str = "") -> Check:
    """The memo's run, re-run from its config and manifest, gives the same val loss bit for bit (same machine)."""
    name, crit = "memo run reproduced", "identical val loss (bitwise, same hardware)"
    if skip_reason:
        return Check.skip(name, skip_reason, crit)
    ok = original is not None and rerun is not None and original == rerun
    return Check.judge(name, ok, f"{original!r} vs {rerun!r}", crit)


def estimate_matches(ratios: Sequence[float], lo: float, hi: float) -> Check:
    """The pre-flight time estimates: the median actual/estimated ratio over the runs within [lo, hi]."""
    if not ratios:
        return Check.judge("pre-flight time estimate", False, "no run", f"median ratio in [{lo:g}, {hi:g}]")
    med = statistics.median(ratios)
    return Check.judge("pre-flight time estimate", lo <= med <= hi,
                       f"actual / estimated training time: median {med:.2f} over {len(ratios)} runs "
                       f"(range {min(ratios):.2f} to {max(ratios):.2f})", f"median ratio in [{lo:g}, {hi:g}]")


def within_time(seconds: float, budget: float) -> Check:
    return Check.judge("the week fits its time budget", seconds <= budget, f"{seconds:,.0f} s", f"≤ {budget:,.0f} s")
