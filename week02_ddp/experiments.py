"""Week 2's experiments. Every function runs on every rank (collectives need all of them) unless noted."""

from __future__ import annotations

import copy
import os
import socket
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from shared.amp import grad_scaler
from shared.data.mnist import MNISTSplits
from shared.data.sampling import ResumableBatchSampler, batch_loader
from shared.dist import DistInfo, all_gather_objects, all_reduce_mean, barrier
from shared.models import ModelConfig, build_model
from shared.parallel import Parallel, build_parallel
from shared.profiling import ProfileResult, StepTimer, peak_memory_gib, profile_steps, reset_peak_memory
from shared.repro import seed_everything, set_deterministic
from shared.rundir import start_run
from shared.tracking import console
from shared.train.classify import ClassifierRun, fit_classifier
from shared.train.config import TrainConfig
from shared.train.optim import build_optimizer
from shared.train.step import train_step, xy_loss
from week02_ddp.config import BenchPoint, RunConfig, Week02Config

WEEK = "week02"


@dataclass
class Context:
    """What every experiment needs: the config, the profile, the data and this process's place."""

    cfg: Week02Config
    profile: str
    splits: MNISTSplits
    info: DistInfo


def launch_facts(ctx: Context) -> list[dict[str, Any]]:
    """Each rank prints its line; returns every rank's facts (rank order) on every rank.

    ``samples_per_step`` is measured, not computed: each rank draws one optimizer step's worth of
    micro-batches from its shard and the counts are summed over ranks.
    """
    cfg, info = ctx.cfg, ctx.info
    micro, accum, world = cfg.data.batch_size, cfg.train.grad_accum_steps, info.world_size
    drawn = _Batches(ctx, micro).take(accum)
    local = torch.tensor(float(sum(y.numel() for _, y in drawn)), device=info.device)
    samples_per_step = int(round(all_reduce_mean(local).item() * world))
    facts = {
        "rank": info.rank, "local_rank": info.local_rank, "world_size": world, "backend": info.backend or "none",
        "device": str(info.device), "host": socket.gethostname(), "pid": os.getpid(),
        "torch threads": torch.get_num_threads(), "micro_batch": micro, "grad_accum_steps": accum,
        "global_batch": f"{micro} x {accum} x {world} = {micro * accum * world}",
        "samples_per_step": samples_per_step,
    }
    print(f"[rank {info.rank}/{world}] local_rank={info.local_rank} device={info.device} backend={facts['backend']} "
          f"micro_batch={micro} grad_accum_steps={accum} global_batch=micro x accum x world_size="
          f"{facts['global_batch']}", flush=True)
    return all_gather_objects(facts)


def shard_check(ctx: Context, epochs: tuple[int, ...] = (0, 1)) -> dict[str, Any]:
    """Gather every rank's ``DistributedSampler`` shard for two epochs and test the sharding contract."""
    n, info, seed = len(ctx.splits.train), ctx.info, ctx.cfg.train.seed
    shards = {}
    for epoch in epochs:
        s = ResumableBatchSampler(n, ctx.cfg.data.batch_size, True, seed, info.rank, info.world_size)
        s.set_epoch(epoch)
        mine = list(s.sampler)
        s.set_epoch(epoch)
        deterministic = mine == list(s.sampler)
        shards[epoch] = all_gather_objects((mine, deterministic))
    out: dict[str, Any] = {"n": n, "world_size": info.world_size, "epochs": {}}
    for epoch, per_rank in shards.items():
        sets = [set(idx) for idx, _ in per_rank]
        overlap = sum(len(a & b) for i, a in enumerate(sets) for b in sets[i + 1 :])
        out["epochs"][epoch] = {
            "sizes": [len(idx) for idx, _ in per_rank], "overlap": overlap,
            "covers": set().union(*sets) == set(range(n)), "deterministic": all(d for _, d in per_rank),
            "head": [idx[:5] for idx, _ in per_rank],
        }
    e0, e1 = (shards[e][0][0] for e in epochs[:2])
    out["differs_across_epochs"] = e0 != e1
    return out


def _train_run(ctx: Context, name: str, model: ModelConfig, train: TrainConfig, micro: int, ddp: bool) -> ClassifierRun:
    world = ctx.info.world_size if ddp else 1
    data = replace(ctx.cfg.data, batch_size=micro)
    run = start_run(WEEK, f"{name}-ws{world}", ctx.profile, RunConfig(data, model, train, world))
    console(f"\n== {name}: world_size={world} micro_batch={micro} accum={train.grad_accum_steps} "
            f"global_batch={micro * train.grad_accum_steps * world} -> {run.dir}")
    return fit_classifier(run, model, train, ctx.splits.train, ctx.splits.val, micro, data.eval_batch_size,
                          ctx.info if ddp else None, drop_last=True)  # the same full batches in both runs


@dataclass
class Pair:
    """A DDP run and the single-process run with the same global batch (the latter on rank 0 only)."""

    ddp: ClassifierRun
    single: ClassifierRun | None
    single_time_s: float = 0.0
    ddp_time_s: float = 0.0


def correctness(ctx: Context) -> dict[str, Pair]:
    """Softmax regression and the CNN, each trained with DDP and then by rank 0 alone (global batch)."""
    cfg, world = ctx.cfg, ctx.info.world_size
    out = {}
    for label, model in (("softmax", cfg.softmax), ("cnn", cfg.cnn)):
        t = time.perf_counter()
        ddp = _train_run(ctx, f"{label}-ddp", model, cfg.train, cfg.data.batch_size, ddp=True)
        ddp_time = time.perf_counter() - t
        single, t = None, time.perf_counter()
        if ctx.info.is_main:  # the other ranks wait at the barrier (well inside dist.timeout_s)
            single = _train_run(ctx, f"{label}-single", model, cfg.train, cfg.data.batch_size * world, ddp=False)
        barrier()
        out[label] = Pair(ddp, single, time.perf_counter() - t, ddp_time)
    return out


def accumulation(ctx: Context) -> ClassifierRun:
    """The CNN under DDP with ``accum_steps`` micro-batches of ``batch_size / accum_steps`` per step."""
    k = ctx.cfg.experiment.accum_steps
    if ctx.cfg.data.batch_size % k:
        raise ValueError(f"data.batch_size={ctx.cfg.data.batch_size} is not divisible by experiment.accum_steps={k}")
    train = copy.deepcopy(ctx.cfg.train)
    train.grad_accum_steps = k
    return _train_run(ctx, f"cnn-ddp-accum{k}", ctx.cfg.cnn, train, ctx.cfg.data.batch_size // k, ddp=True)


@dataclass
class BenchResult:
    """Throughput and memory of one :class:`BenchPoint` (rank 0's view; losses are means over ranks)."""

    point: BenchPoint
    world_size: int
    timing: dict[str, float]  # mean seconds per step and per phase (see StepTimer.summary)
    step_times: list[float]  # seconds of every timed step
    peak_memory_gib: float
    losses: list[float] = field(default_factory=list)
    skipped_steps: int = 0  # fp16 steps the GradScaler skipped (inf/NaN gradients)
    round_samples_per_sec: list[float] = field(default_factory=list)  # one per measurement round, in round order

    @property
    def global_batch(self) -> int:
        return self.point.micro_batch * self.point.grad_accum_steps * self.world_size

    @property
    def samples_per_sec(self) -> float:
        """Mean over rounds of (global batch / the round's median step time): the median is robust to the odd
        stalled step on a shared machine, the mean over rounds is what :func:`shared.stats.compare` ranks."""
        if self.round_samples_per_sec:
            return float(np.mean(self.round_samples_per_sec))
        return self.global_batch / float(np.median(self.step_times))

    @property
    def round_spread(self) -> float:
        """(max - min) / mean of the per-round samples/s: the round-to-round noise (0 with one round)."""
        r = self.round_samples_per_sec
        return float((max(r) - min(r)) / np.mean(r)) if r else 0.0

    @property
    def step_cv(self) -> float:
        """Coefficient of variation of the step time (std / mean): the step-to-step noise inside the rounds."""
        return float(np.std(self.step_times) / np.mean(self.step_times))

    @property
    def finite(self) -> bool:
        return bool(torch.isfinite(torch.tensor(self.losses)).all())


class _Batches:
    """Endless micro-batches of one rank's shard, epoch after epoch, moved to ``device``."""

    def __init__(self, ctx: Context, micro: int) -> None:
        info = ctx.info
        self.loader = batch_loader(ctx.splits.train, micro, True, ctx.cfg.train.seed, info.rank, info.world_size, True)
        if self.loader.sampler.batches_per_epoch == 0:
            raise ValueError(f"micro batch {micro} is larger than this rank's shard of {len(ctx.splits.train)} "
                             f"images / {info.world_size} ranks: lower the micro batch in experiment.ablation")
        self.device, self.epoch = info.device, 0
        self.loader.sampler.set_epoch(0)
        self.it = iter(self.loader)

    def take(self, k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        while len(out) < k:
            try:
                x, y = next(self.it)
            except StopIteration:
                self.epoch += 1
                self.loader.sampler.set_epoch(self.epoch)
                self.it = iter(self.loader)
                continue
            out.append((x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)))
        return out


CE = xy_loss(F.cross_entropy)


def _bench_model(ctx: Context, precision: str) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.amp.GradScaler,
                                                       Parallel]:
    """The CNN wrapped for training by the run's strategy (DDP under torchrun), its optimizer and GradScaler."""
    seed_everything(ctx.cfg.train.seed)
    set_deterministic(False)  # fastest kernels: this is a throughput measurement
    model = build_model(ctx.cfg.cnn).to(ctx.info.device)
    opt = build_optimizer(model, ctx.cfg.train.optim())  # the training optimizer at its peak lr (no schedule)
    parallel = build_parallel("auto", ctx.info)
    return parallel.wrap(model), opt, grad_scaler(ctx.info.device, precision), parallel


def bench(ctx: Context, point: BenchPoint) -> BenchResult:
    """``bench_warmup + bench_steps`` optimizer steps of the CNN at ``point``; timed, memory-tracked."""
    ex, device = ctx.cfg.experiment, ctx.info.device
    model, opt, scaler, parallel = _bench_model(ctx, point.precision)
    batches = _Batches(ctx, point.micro_batch)
    timer = StepTimer(device)
    reset_peak_memory(device)
    losses, skipped = [], 0
    for _ in range(ex.bench_warmup + ex.bench_steps):
        scale = scaler.get_scale() if scaler.is_enabled() else 1.0
        timer.start_step()
        with timer.phase("data"):
            micro = batches.take(point.grad_accum_steps)
        loss, _ = train_step(model, opt, micro, CE, precision=point.precision, scaler=scaler, parallel=parallel,
                             timer=timer)
        timer.end_step()
        losses.append(all_reduce_mean(loss).item())
        skipped += int(scaler.is_enabled() and scaler.get_scale() < scale)
    steps = timer.frame(skip=ex.bench_warmup).step.tolist()
    res = BenchResult(point, ctx.info.world_size, timer.summary(skip=ex.bench_warmup), steps, peak_memory_gib(device),
                      losses, skipped)
    res.round_samples_per_sec = [res.global_batch / float(np.median(steps))]
    console(f"bench {point.label}: {res.samples_per_sec:,.0f} samples/s, step {res.timing['step'] * 1e3:.1f} ms, "
            f"peak {res.peak_memory_gib:.3f} GiB, loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    return res


def merge_rounds(rounds: list[BenchResult]) -> BenchResult:
    """One result from repeated measurements of the same point: every round's samples/s (their spread is the
    noise the recommendation must beat), all step times, mean phase times, max peak memory; losses and skipped
    steps of the first round (every round trains the same way)."""
    first = rounds[0]
    timing = {k: float(np.mean([r.timing[k] for r in rounds])) for k in first.timing}
    steps = [t for r in rounds for t in r.step_times]
    return BenchResult(first.point, first.world_size, timing, steps, max(r.peak_memory_gib for r in rounds),
                       first.losses, first.skipped_steps, [s for r in rounds for s in r.round_samples_per_sec])


def run_benchmarks(ctx: Context) -> tuple[dict[str, BenchResult], dict[str, BenchResult]]:
    """The AMP comparison (base micro batch, each precision) and the system ablation.

    Each distinct point is measured ``bench_rounds`` times, alternating the order of the points
    (forward, reversed, ...) so that drift of the machine (warm-up, frequency, other load) is spread
    over all points instead of favouring whichever runs first.
    """
    ex, base = ctx.cfg.experiment, ctx.cfg.data.batch_size
    points: dict[tuple, BenchPoint] = {}
    for p in [BenchPoint(base, 1, prec) for prec in ex.amp_precisions] + list(ex.ablation):
        points.setdefault((p.micro_batch, p.grad_accum_steps, p.precision), p)
    rounds: dict[tuple, list[BenchResult]] = {k: [] for k in points}
    order = list(points)
    for i in range(ex.bench_rounds):
        for key in order if i % 2 == 0 else order[::-1]:
            rounds[key].append(bench(ctx, points[key]))
    merged = {k: merge_rounds(v) for k, v in rounds.items()}
    amp = {prec: merged[(base, 1, prec)] for prec in ex.amp_precisions}
    ablation = {p.label: merged[(p.micro_batch, p.grad_accum_steps, p.precision)] for p in ex.ablation}
    return amp, ablation


def allreduce_ms(ctx: Context, numel: int, reps: int = 20) -> float:
    """Mean milliseconds of one all-reduce of ``numel`` fp32 values (the CNN's gradient); 0 with one process."""
    if not ctx.info.is_distributed:
        return 0.0
    t = torch.zeros(numel, device=ctx.info.device)
    for _ in range(3):
        torch.distributed.all_reduce(t)
    timer = StepTimer(ctx.info.device)
    for _ in range(reps):
        timer.start_step()
        torch.distributed.all_reduce(t)
        timer.end_step()
    return timer.frame().step.mean() * 1e3


def profile(ctx: Context, trace_path: Path) -> ProfileResult:
    """A ``torch.profiler`` trace of a few fp32 steps at the base config (each rank writes its own file)."""
    ex, micro = ctx.cfg.experiment, ctx.cfg.data.batch_size
    model, opt, _, parallel = _bench_model(ctx, "fp32")
    batches = _Batches(ctx, micro)
    rank_path = trace_path if ctx.info.is_main else trace_path.with_name(f"{trace_path.stem}.rank{ctx.info.rank}.json")

    def step() -> None:
        train_step(model, opt, batches.take(1), CE, parallel=parallel)

    return profile_steps(step, rank_path, ctx.info.device, ex.profile_warmup, ex.profile_active)
