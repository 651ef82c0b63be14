"""Week 2's checks: pure functions from the run's numbers to a :class:`shared.report.Check`.

``report.py`` pulls plain numbers out of the runs (accuracies, loss gaps, phase times, samples/s per benchmark
round) and calls these; ``tests/test_checks.py`` feeds each one a passing and a failing input. A check that cannot
be measured in this run (one process, no bf16 hardware) is a SKIP with its reason, never a PASS.

Speed comparisons (bf16 vs fp32, the recommended configuration) use :func:`shared.stats.compare` over the
benchmark's rounds, the rule week 1's LR ablation uses over seeds: the faster mean wins only when its lead over the
runner-up exceeds the larger of the two round ranges (max - min). That is stricter than "the ranges do not overlap"
(every round of the leader beats every round of the runner-up), which two configs of equal speed would still show
with probability 2 / C(2n, n) for n rounds each (1/3 at n = 2, 1/10 at n = 3: the exact Mann-Whitney U null
distribution at U = 0; Mann & Whitney 1947). The principle is the one of Georges, Buytaert & Eeckhout, "Statistically
Rigorous Java Performance Evaluation" (OOPSLA 2007): when the spreads of repeated measurements overlap, no
difference is claimed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from shared.report import Check
from shared.stats import Comparison, compare

SIMPLICITY = {"fp32": 0, "bf16": 1, "fp16": 2}  # fp32 needs nothing; bf16 needs autocast; fp16 also a GradScaler


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


# --- 1. Launch ---------------------------------------------------------------------------------------------------


def launch_reported(rows: Sequence[Mapping], micro: int, accum: int, world: int) -> Check:
    """Every rank 0..world-1 reported once, with the launch's world size, and the samples one optimizer step drew
    over all ranks (counted, not computed) equal micro x accum x world: the global-batch formula the logs print
    is the batch the step really consumes."""
    expected = micro * accum * world
    ranks = sorted(int(r["rank"]) for r in rows)
    drawn = sorted({int(r["samples_per_step"]) for r in rows})
    ok = (ranks == list(range(world)) and all(int(r["world_size"]) == world for r in rows)
          and all(int(r["micro_batch"]) == micro and int(r["grad_accum_steps"]) == accum for r in rows)
          and drawn == [expected])
    return Check.judge("logs show rank/world_size and global batch", ok,
                       f"ranks reported {ranks} (world size {world}); global batch {micro} x {accum} x {world} = "
                       f"{expected}; samples one optimizer step drew over all ranks: {', '.join(map(str, drawn))}",
                       "ranks 0..world_size-1 each report once with this world size; the samples one step draws = "
                       "micro x accum x world_size")


# --- 2. Sharding -------------------------------------------------------------------------------------------------


def shards_unique(shards: Mapping, world: int) -> Check:
    """``DistributedSampler``'s contract, from every rank's gathered indices (``experiments.shard_check``): no index
    on two ranks, the union is the dataset, the same shard on a re-draw of the same epoch, and another order the
    next epoch (``set_epoch`` forgotten repeats it). With one process there is no other shard to be disjoint
    from: a SKIP, unless what one process can show (cover, determinism, reshuffle) already fails."""
    name = "each rank sees a unique shard"
    criterion = "indices disjoint across ranks, union = dataset, deterministic per epoch, reshuffled across epochs"
    epochs = shards["epochs"]
    measured = ("; ".join(f"epoch {e}: overlap {v['overlap']}, covers all {shards['n']}: {v['covers']}, same on "
                          f"re-draw: {v['deterministic']}" for e, v in epochs.items())
                + f"; epoch 0 != epoch 1 order: {shards['differs_across_epochs']}")
    solo_ok = bool(epochs) and all(v["covers"] and v["deterministic"] for v in epochs.values()) \
        and bool(shards["differs_across_epochs"])
    if world < 2 and solo_ok:
        return Check.skip(name, "one process: disjointness needs >= 2 ranks (launch with torchrun "
                          "--nproc-per-node 2)", criterion, measured)
    return Check.judge(name, world >= 2 and solo_ok and all(v["overlap"] == 0 for v in epochs.values()),
                       measured, criterion)


# --- 3 and 5. Runs that must agree --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    """Two training runs that should follow the same trajectory (single vs DDP, accumulation vs none)."""

    label: str
    acc_a: float  # final val accuracy of run a
    acc_b: float
    loss_gap: float  # mean |train loss a - train loss b| over the steps both logged
    steps_a: int  # optimizer steps of each run
    steps_b: int
    steps_compared: int  # steps both runs logged a train loss for

    @property
    def acc_gap(self) -> float:
        return abs(self.acc_a - self.acc_b)

    def within(self, max_acc_gap: float, max_loss_gap: float) -> bool:
        return (self.steps_a == self.steps_b and self.steps_compared > 0
                and self.acc_gap <= max_acc_gap and self.loss_gap <= max_loss_gap)  # NaN fails both comparisons

    def describe(self) -> str:
        return (f"|acc gap| {self.acc_gap:.4f}, mean |loss gap| {self.loss_gap:.2e} over {self.steps_compared} "
                f"steps, steps {self.steps_a} vs {self.steps_b}")


def ddp_matches_single(pairs: Sequence[Agreement], world: int, max_acc_gap: float, max_loss_gap: float) -> Check:
    """DDP on W ranks x micro batch b computes the gradient of one process on W*b samples, so with the same seed
    and lr the two runs' loss curves coincide (to float reassociation) and so do their accuracies; the gaps allowed
    are a few rounding errors' worth, far below what a wrong gradient average (sum instead of mean, a rank's batch
    dropped) produces. With one process both runs are the same single-process run: a SKIP unless they disagree."""
    name = "single vs DDP: curves similar, accuracy gap small"
    criterion = (f"same steps; |acc gap| <= {max_acc_gap} and mean |loss gap| per step <= {max_loss_gap}, for "
                 "every model")
    measured = "; ".join(f"{p.label}: {p.describe()}" for p in pairs) or "no pairs"
    ok = bool(pairs) and all(p.within(max_acc_gap, max_loss_gap) for p in pairs)
    if world < 2 and ok:
        return Check.skip(name, "one process: the DDP run is a single-process run (launch with torchrun "
                          "--nproc-per-node 2)", criterion, measured)
    return Check.judge(name, ok, measured, criterion)


def accumulation_matches(a: Agreement, max_acc_gap: float, max_loss_gap: float) -> Check:
    """k micro-batches of b/k, each loss divided by k, then one step, is the gradient of one batch of b: the curve
    and the accuracy must match the run without accumulation, step for step."""
    return Check.judge("metrics match across accumulation settings", a.within(max_acc_gap, max_loss_gap),
                       a.describe(), f"same steps; |acc gap| <= {max_acc_gap}, mean |loss gap| <= {max_loss_gap}")


# --- 4. Mixed precision ------------------------------------------------------------------------------------------


def loss_stable(first: float, last: float, finite: bool, skipped: int, steps: int, max_skipped_frac: float) -> bool:
    """A benchmark run trained: every loss finite, the last below the first, few steps skipped by the GradScaler."""
    return bool(finite) and last < first and skipped <= max_skipped_frac * steps


@dataclass(frozen=True)
class AmpRun:
    """One precision of the AMP benchmark, as plain numbers."""

    precision: str
    first_loss: float
    last_loss: float
    final_loss: float  # mean of the last steps
    ref_loss: float  # fp32's final loss after as many applied updates (fp16 skips some)
    skipped_steps: int
    steps: int
    finite: bool  # every loss finite


def amp_stable(runs: Sequence[AmpRun], max_loss_gap: float, max_skipped_frac: float) -> Check:
    """bf16/fp16 autocast with fp32 weights should train like fp32: every precision finite and decreasing with few
    skipped steps, and each reduced precision's final loss within ``max_loss_gap`` (relative) of fp32's after the
    same number of applied updates. A skipped fp16 step applies no update, hence the matched reference."""
    low = [r for r in runs if r.precision != "fp32"]
    ok = bool(low) and any(r.precision == "fp32" for r in runs) and all(
        loss_stable(r.first_loss, r.last_loss, r.finite, r.skipped_steps, r.steps, max_skipped_frac) for r in runs
    ) and all(abs(r.final_loss - r.ref_loss) <= max_loss_gap * r.ref_loss for r in low)
    measured = "; ".join(f"{r.precision}: loss {r.first_loss:.4f} -> {r.final_loss:.4f} (fp32 at equal updates "
                         f"{r.ref_loss:.4f}), {r.skipped_steps}/{r.steps} skipped, finite: {r.finite}" for r in runs)
    return Check.judge("AMP stable", ok, measured or "no precisions measured",
                       f"fp32 and a reduced precision measured; each finite, decreasing, <= {max_skipped_frac:.0%} "
                       f"skipped steps; reduced precision within {max_loss_gap:.0%} of fp32's loss after as many "
                       "updates")


def lead_and_noise(cmp: Comparison, label: str | None = None) -> tuple[float, float]:
    """``cmp``'s best mean's lead over ``label`` (default: the runner-up) and the larger of the two round ranges,
    both relative to ``label``'s mean: the lead clears the noise when the first exceeds the second."""
    other = cmp.runner_up if label is None else label
    if other is None:
        return math.nan, math.nan
    ref = cmp.means[other]
    spread = max(cmp.ranges[cmp.best], cmp.ranges[other])
    return (cmp.means[cmp.best] - ref) / ref, spread / ref


def bf16_faster(fp32_rounds: Sequence[float], bf16_rounds: Sequence[float] | None, skip_reason: str = "") -> Check:
    """On tensor-core GPUs bf16 matmuls/convolutions run several times faster than fp32 ones, so the bf16 step
    should be faster: bf16's mean samples/s over the benchmark rounds must lead fp32's by more than the rounds'
    spread. ``skip_reason`` (no bf16 hardware here) makes it a SKIP; the CPU numbers still go in ``measured``."""
    name = "AMP (bf16) faster than fp32"
    criterion = ">= 2 rounds each; bf16's mean samples/s leads fp32's by more than the larger round range"
    if not bf16_rounds:
        return Check.judge(name, False, "bf16 was not benchmarked (experiment.amp_precisions)", criterion)
    cmp = compare({"bf16": list(bf16_rounds), "fp32": list(fp32_rounds)})
    ratio = cmp.means["bf16"] / cmp.means["fp32"]
    lead, noise = lead_and_noise(cmp, "fp32" if cmp.best == "bf16" else "bf16")
    measured = (f"bf16 {cmp.means['bf16']:,.0f} vs fp32 {cmp.means['fp32']:,.0f} samples/s ({ratio:.2f}x) over "
                f"{cmp.min_seeds} round(s); {cmp.best} leads by {_pct(lead)}, round noise {_pct(noise)}")
    if skip_reason:
        return Check.skip(name, skip_reason, criterion, measured)
    return Check.judge(name, cmp.decided and cmp.best == "bf16", measured, criterion)


# --- 6. Profiling ------------------------------------------------------------------------------------------------


def work_kinds(phase_ms: Mapping[str, float]) -> list[tuple[str, float]]:
    """The step's timed phases by kind of work, largest first: input pipeline (data), model compute (forward +
    backward, which under DDP includes the overlapped gradient all-reduce) and the optimizer update."""
    kinds = {"data": phase_ms["data"], "compute": phase_ms["forward"] + phase_ms["backward"],
             "optimizer": phase_ms["optimizer"]}
    return sorted(kinds.items(), key=lambda kv: kv[1], reverse=True)


def bottleneck_found(phase_ms: Mapping[str, float], max_unaccounted: float, min_share: float) -> Check:
    """A bottleneck is named only when the timers explain the step (the four phases sum to the measured step time
    within ``max_unaccounted``) and one kind of work takes at least ``min_share`` of it and more than the next."""
    step = phase_ms["step"]
    (top, top_ms), (second, second_ms) = work_kinds(phase_ms)[:2]
    covered = (phase_ms["data"] + phase_ms["forward"] + phase_ms["backward"] + phase_ms["optimizer"]) / step
    ok = step > 0 and abs(1 - covered) <= max_unaccounted and top_ms >= min_share * step and top_ms > second_ms
    return Check.judge("a clear bottleneck identified", ok,
                       f"{top} {top_ms / step:.0%} of the {step:.2f} ms step (next: {second} {second_ms / step:.0%});"
                       f" the four timed phases cover {covered:.0%} of the step",
                       f"the phases account for the step within {max_unaccounted:.0%}, and one kind of work (data, "
                       f"compute, optimizer) takes at least {min_share:.0%} of it")


# --- 7. System ablation ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recommendation:
    """What :func:`recommend` decided, with the numbers that justify it (fractions: 0.031 = 3.1%)."""

    pick: str | None  # the recommended config (None: nothing stable, or the noise is unknown)
    why: str  # "winner" | "tie" | "only candidate" | "none stable" | "noise unknown"
    candidates: tuple[str, ...] = ()  # stable, at the compared global batch, loss within tolerance; fastest first
    global_batch: int | None = None  # the global batch the candidates share
    leader: str | None = None  # the fastest candidate (mean samples/s over rounds)
    other: str | None = None  # what the leader is compared with: the runner-up, or its closest tied rival
    lead: float = math.nan  # leader's mean over ``other``'s, relative to ``other``
    noise: float = math.nan  # the larger of the two round ranges, relative to ``other``'s mean
    rounds: int = 0  # fewest timing rounds of any candidate
    tied: tuple[str, ...] = ()  # the leader and every candidate it does not clear, simplest first; () for a winner


def simplicity(row: Mapping) -> tuple:
    """Sort key, simplest first: fewer accumulation steps, then fp32 < bf16 < fp16, then the faster."""
    return row["grad_accum_steps"], SIMPLICITY.get(row["precision"], 9), -row["samples_per_sec"]


def recommend(bench: pd.DataFrame, rounds: Mapping[str, Sequence[float]], tol: float) -> Recommendation:
    """Pick one configuration from ``bench`` (one row per config) using its per-round samples/s in ``rounds``.

    Candidates: stable configs at the most common global batch (another global batch changes the optimisation,
    not just the speed) whose final loss is within ``tol`` (relative) of the best there. The fastest mean is the
    pick only when :func:`shared.stats.compare` says it clears every other candidate (lead > the larger round
    range); the candidates it does not clear are tied with it, and the simplest of the tie is recommended.
    """
    cands = bench[bench.stable]
    if cands.empty:
        return Recommendation(None, "none stable")
    gb = int(cands.global_batch.mode().iloc[0])
    same = cands[cands.global_batch == gb]
    ok = same[same.final_loss <= same.final_loss.min() * (1 + tol)]
    scores = {c: list(rounds[c]) for c in ok.config}
    cmp = compare(scores)
    order = tuple(sorted(scores, key=lambda c: cmp.means[c], reverse=True))
    base = {"candidates": order, "global_batch": gb, "leader": cmp.best, "rounds": cmp.min_seeds}
    if cmp.runner_up is None:
        return Recommendation(cmp.best, "only candidate", **base)
    if cmp.min_seeds < 2:
        lead, noise = lead_and_noise(cmp)
        return Recommendation(None, "noise unknown", other=cmp.runner_up, lead=lead, noise=noise, **base)
    rivals = [c for c in order[1:] if not compare({cmp.best: scores[cmp.best], c: scores[c]}).decided]
    other = rivals[0] if rivals else cmp.runner_up
    lead, noise = lead_and_noise(compare({cmp.best: scores[cmp.best], other: scores[other]}), other)
    if not rivals:
        return Recommendation(cmp.best, "winner", other=other, lead=lead, noise=noise, **base)
    rows = ok.set_index("config")
    tied = tuple(sorted([cmp.best, *rivals], key=lambda c: simplicity({**rows.loc[c], "samples_per_sec":
                                                                        cmp.means[c]})))
    return Recommendation(tied[0], "tie", other=other, lead=lead, noise=noise, tied=tied, **base)


def recommendation_justified(rec: Recommendation) -> Check:
    """The recommendation follows from the timings: either the fastest candidate's lead clears the round-to-round
    noise (over >= 2 rounds), or the tie inside the noise is named and its simplest member recommended (or there
    is one candidate only). Nothing stable, a single round (noise unknown) or a pick the numbers do not back
    fails."""
    name, criterion = "the recommendation is justified", (
        "a stable pick whose lead over every other candidate exceeds the larger round range (>= 2 rounds), or a "
        "tie inside that noise named with its simplest member recommended")
    if rec.pick is None or rec.why == "none stable":
        why = {"none stable": "no configuration was stable",
               "noise unknown": f"{rec.rounds} round(s): the timing noise is unknown"}.get(rec.why, rec.why)
        return Check.judge(name, False, f"no pick: {why}", criterion)
    if rec.why == "only candidate":
        return Check.judge(name, len(rec.candidates) == 1 and rec.pick == rec.leader,
                           f"`{rec.pick}` is the only candidate at global batch {rec.global_batch}", criterion)
    margin = f"lead {_pct(rec.lead)} of `{rec.leader}` over `{rec.other}`, noise {_pct(rec.noise)}, {rec.rounds} rounds"
    if rec.why == "winner":
        return Check.judge(name, rec.pick == rec.leader and rec.rounds >= 2 and rec.lead > rec.noise and not rec.tied,
                           f"`{rec.pick}` wins: {margin}", criterion)
    if rec.why == "tie":
        return Check.judge(name, len(rec.tied) >= 2 and rec.pick == rec.tied[0] and rec.rounds >= 2
                           and rec.lead <= rec.noise,
                           f"tie between {', '.join(f'`{c}`' for c in rec.tied)} ({margin}); simplest `{rec.pick}` "
                           "recommended", criterion)
    return Check.judge(name, False, f"unknown decision {rec.why!r}", criterion)
