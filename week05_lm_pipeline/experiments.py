"""The week's measurements beyond the main run: the throughput/memory grid, the stabilisation ablation and the
modernisation ladder. Ablation and ladder runs are short (``cfg.short``: a small model, a fixed token budget),
each in its own run directory keyed by its config, so a rerun of the week reuses finished runs.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from shared.atomic import atomic_write_text
from shared.data.lm import open_streams
from shared.device import resolve_device
from shared.flops import mfu_peak
from shared.models.gpt import GPT
from shared.paths import runs_root
from shared.repro import seed_everything
from shared.rundir import run_path
from shared.tasks.lm import LMTask
from shared.tracking import console
from shared.train.config import run_identity
from shared.train.perplexity import bits_per_byte, stream_loss, unigram_loss
from shared.train.pretrain import LMSetup, pretrain
from shared.train.step import NonFiniteLossError
from shared.train.throughput import time_train_steps
from week05_lm_pipeline.config import Week05Config, train_run_config
from week05_lm_pipeline.stages import WEEK

Changes = dict[str, dict[str, Any]]  # {"model"|"optim"|"schedule"|"loop": {field: value}}


@dataclass
class ShortRun:
    """One short training run and what the tables need from it."""

    group: str
    name: str
    seed: int
    settings: str  # what differs from the group's baseline, in words
    final_loss: float | None  # nats/token on the fixed val eval set; None when the run diverged
    diverged_at: int | None  # the step whose loss was NaN/inf
    max_train_loss: float
    train_time_s: float
    select_loss: float | None = None  # nats/token on the held-out end of train.bin (what lr tuning selects on)
    lr: float = 0.0

    @property
    def selection_key(self) -> float:
        """Held-out train loss for choosing among runs; a diverged run ranks last."""
        return float("inf") if self.select_loss is None else self.select_loss


def merge(*changes: Changes) -> Changes:
    """Later changes win, section by section."""
    out: Changes = {}
    for c in changes:
        for section, values in c.items():
            out[section] = {**out.get(section, {}), **values}
    return out


def short_setup(cfg: Week05Config, changes: Changes, seed: int) -> LMSetup:
    """The short-run budget (``cfg.short``) on the week's settings, with ``changes`` applied."""
    s = cfg.short
    c = merge({"model": {"n_layer": s.n_layer, "n_head": s.n_head, "n_embd": s.n_embd, "block_size": s.block_size,
                         "dropout": 0.0},
               "loop": {"max_steps": s.max_steps, "micro_batch": s.micro_batch, "eval_every": s.eval_every,
                        "log_every": 10, "compile": False, "seed": seed, "progress": False}}, changes)
    return LMSetup(replace(cfg.model, **c["model"]), replace(cfg.optim, **c.get("optim", {})),
                   replace(cfg.schedule, **c.get("schedule", {})), replace(run_identity(cfg.loop), **c["loop"]),
                   replace(cfg.task, eval_iters=s.eval_iters))


def split_holdout(train: np.ndarray, holdout: int) -> tuple[np.ndarray, np.ndarray]:
    """(the training part, the held-out last ``holdout`` tokens) of the train stream: short runs never train on the
    held-out end, so choosing an lr on it leaves the val set for reporting only.

    Raises:
        ValueError: the stream is too short to hold ``holdout`` tokens out and still train.
    """
    if holdout <= 0:
        raise ValueError(f"short.select_tokens={holdout}: must be > 0 (the held-out slice lr tuning selects on)")
    if holdout >= len(train) // 2:
        raise ValueError(f"short.select_tokens={holdout} would hold out half or more of the {len(train):,} training "
                         "tokens: lower it")
    return train[:-holdout], train[-holdout:]


def run_short(cfg: Week05Config, profile: str, packed, tok_sha: str, group: str, name: str, settings: str,
              seed: int, changes: Changes | None = None) -> ShortRun:
    """Train (or reuse) one short run on the train stream minus its held-out end; a divergence is a result, not an
    error. The final loss is measured on the first ``short.eval_tokens`` val tokens and on the held-out slice."""
    setup = short_setup(cfg, changes or {}, seed)
    holdout = cfg.short.select_tokens
    run_name = f"{group}-{name.replace(' ', '_').replace(',', '')}-s{seed}-h{holdout}"
    run_cfg = train_run_config(cfg.data, setup)
    train_full, val = open_streams(packed, tok_sha)
    train, held_out = split_holdout(train_full, holdout)
    diverged, final, select, t0 = None, None, None, time.perf_counter()

    def final_losses(model: GPT, _) -> dict[str, float]:
        def loss(stream, n):
            return stream_loss(model, stream, setup.model.block_size, 16, setup.loop.precision, max_tokens=n)["loss"]
        return {"val_loss": loss(val, cfg.short.eval_tokens), "select_loss": loss(held_out, 0)}

    try:
        lm = pretrain(WEEK, run_name, profile, run_cfg, setup, train, val, tokenizer_sha256=tok_sha,
                      tensorboard=False, result_metrics=final_losses)
        got = final_losses(lm.model, None) if lm.record is None else lm.record["metrics"]
        final, select = got["val_loss"], got["select_loss"]
    except NonFiniteLossError as e:
        diverged = e.step
    rows = pd.read_csv(run_path(WEEK, run_name, profile, run_cfg) / "metrics.csv")
    train_rows = rows[rows.phase == "train"]
    console(f"{group} / {name} / seed {seed}: " + (f"val {final:.4f}" if final is not None else f"diverged at {diverged}"))
    return ShortRun(group, name, seed, settings, final, diverged, float(train_rows.loss.max()), time.perf_counter() - t0,
                    select, float(setup.optim.lr))


@dataclass
class LRSearch:
    """An lr search on one seed: every run, the chosen lr, and whether it lies strictly inside the grid searched."""

    runs: list[ShortRun]
    best_lr: float
    inside: bool  # the best lr has a tried lr on each side (not at an edge of the final grid)

    @property
    def grid(self) -> list[float]:
        return sorted(r.lr for r in self.runs)

    @property
    def best_run(self) -> ShortRun:
        return next(r for r in self.runs if r.lr == self.best_lr)


def search_lr(run: Callable[[float], ShortRun], grid: list[float], max_extensions: int = 3) -> LRSearch:
    """Try every lr of ``grid``; while the best (lowest held-out loss) sits at an edge, extend the grid one step
    beyond that edge (by the grid's own ratio, x2 for a one-point grid), at most ``max_extensions`` times.

    Raises:
        ValueError: an empty grid.
    """
    if not grid:
        raise ValueError("an lr search needs at least one lr in its grid")
    runs = {lr: run(lr) for lr in sorted(grid)}
    ratio = (max(grid) / min(grid)) ** (1 / (len(grid) - 1)) if len(grid) > 1 else 2.0

    def best_of() -> float:
        return min(sorted(runs), key=lambda lr: runs[lr].selection_key)

    for _ in range(max_extensions):
        lrs, best = sorted(runs), best_of()
        if lrs[0] < best < lrs[-1]:
            break
        new = float(f"{(best * ratio if best == lrs[-1] else best / ratio):.6g}")
        runs[new] = run(new)
    lrs, best = sorted(runs), best_of()
    return LRSearch([runs[lr] for lr in lrs], best, lrs[0] < best < lrs[-1])


@dataclass
class Stabilisation:
    """The stabilisation ablation: one setting changed at a time at the normal lr (``one_at_a_time``, seed 0), the
    upward lr sweep of the unprotected run (``sweep``, seed 0), and at ``high_lr`` (the first lr of the sweep that
    broke the unprotected run) both variants on every seed, and each protection alone (which one does the rescue).

    A run is *broken* when it diverged (NaN/inf) or its val loss is not at least ``margin`` below the unigram
    baseline on the same tokens (``unigram_loss``): it learned nothing beyond token frequencies, the collapse a
    too-high lr causes. A run that is not broken *survives*."""

    one_at_a_time: list[ShortRun]
    sweep: list[ShortRun]
    high_lr: float | None  # None: no lr of the sweep broke the unprotected run
    unprotected: list[ShortRun]  # at high_lr, every seed
    protected: list[ShortRun]  # at high_lr with warm-up and clipping, every seed
    warmup_only: list[ShortRun]  # at high_lr with warm-up, without clipping, every seed
    clip_only: list[ShortRun]  # at high_lr with clipping, without warm-up, every seed
    unigram_loss: float  # nats/token of the unigram baseline on the short runs' val tokens
    margin: float  # nats/token below the unigram loss that count as having learned context

    @property
    def bar(self) -> float:
        """The val loss a run must end below to survive."""
        return self.unigram_loss - self.margin

    @property
    def baseline_loss(self) -> float | None:
        return self.one_at_a_time[0].final_loss

    def broken(self, run: ShortRun) -> bool:
        return run.final_loss is None or run.final_loss >= self.bar


def stabilisation_ablation(cfg: Week05Config, profile: str, packed, tok_sha: str) -> Stabilisation:
    """Warm-up, clipping and accumulation varied one at a time from a stable baseline; then the lr raised until the
    run without warm-up and clipping breaks, and at that lr the runs with and without them, and with each alone, on
    every seed."""
    a, k = cfg.ablation, cfg.ablation.accum_k
    seed0 = a.seeds[0]
    base = {"model": {"norm_placement": a.norm_placement}, "schedule": {"warmup_steps": a.warmup_steps},
            "loop": {"grad_clip": a.grad_clip}}
    bare = {"schedule": {"warmup_steps": 0}, "loop": {"grad_clip": 0.0}}

    def at(lr: float) -> Changes:
        return {"optim": {"lr": lr}, "schedule": {"min_lr": lr / 10}}

    def short(name: str, settings: str, seed: int, change: Changes) -> ShortRun:
        return run_short(cfg, profile, packed, tok_sha, "ablation", name, settings, seed, merge(base, change))

    variants: list[tuple[str, str, Changes]] = [
        ("baseline", f"{a.norm_placement}-LN, warm-up {a.warmup_steps}, clip {a.grad_clip}, accumulation 1, lr "
                     f"{cfg.optim.lr:g}", {}),
        ("no warm-up", "warm-up 0", {"schedule": {"warmup_steps": 0}}),
        ("no clipping", "clip off", {"loop": {"grad_clip": 0.0}}),
        (f"accumulation {k}", f"{cfg.short.micro_batch // k} x {k} micro-batches (same global batch)",
         {"loop": {"micro_batch": cfg.short.micro_batch // k, "grad_accum_steps": k}}),
    ]
    train, val = open_streams(packed, tok_sha)
    n_eval = cfg.short.eval_tokens or len(val)
    unigram = unigram_loss(split_holdout(train, cfg.short.select_tokens)[0], val[:n_eval], cfg.model.vocab_size)["loss"]
    out = Stabilisation([short(n, st, seed0, c) for n, st, c in variants], [], None, [], [], [], [], unigram,
                        a.margin)

    def unprotected(lr: float, seed: int) -> ShortRun:
        return short(f"unprotected lr {lr:g}", f"lr {lr:g}, no warm-up, no clipping", seed, merge(at(lr), bare))

    for lr in sorted(a.high_lrs):
        out.sweep.append(unprotected(lr, seed0))
        if out.broken(out.sweep[-1]):
            out.high_lr = lr
            break
    if out.high_lr is not None:
        lr = out.high_lr
        out.unprotected = [out.sweep[-1]] + [unprotected(lr, s) for s in a.seeds[1:]]
        out.protected = [short(f"protected lr {lr:g}", f"lr {lr:g} with warm-up {a.warmup_steps} and clip "
                               f"{a.grad_clip}", s, at(lr)) for s in a.seeds]
        out.warmup_only = [short(f"warm-up only lr {lr:g}", f"lr {lr:g} with warm-up {a.warmup_steps}, no clipping",
                                 s, merge(at(lr), {"loop": {"grad_clip": 0.0}})) for s in a.seeds]
        out.clip_only = [short(f"clipping only lr {lr:g}", f"lr {lr:g} with clip {a.grad_clip}, no warm-up", s,
                               merge(at(lr), {"schedule": {"warmup_steps": 0}})) for s in a.seeds]
    return out


@dataclass
class Ladder:
    """The modernisation ladder: every rung on every seed, and the two lr searches (seed 0, held-out selection)."""

    runs: list[ShortRun]
    sgd_search: LRSearch  # the baseline rung's SGD lr
    adamw_search: LRSearch  # the last rung's AdamW lr


def ladder(cfg: Week05Config, profile: str, packed, tok_sha: str) -> Ladder:
    """The modernisation ladder. The baseline's SGD lr and the last rung's AdamW lr are both searched on seed 0
    (:func:`search_lr`, chosen on the held-out end of train.bin), so neither end of the ladder is a straw man; every
    rung then runs on every seed and is reported on val."""
    lc = cfg.ladder
    seed0 = lc.seeds[0]
    constant = {"name": "constant", "warmup_steps": 0}
    layer_learned = {"model": {"norm": "layernorm", "pos": "learned"}}
    rms_rope = {"model": {"norm": "rmsnorm", "pos": "rope"}}

    def sgd(lr: float) -> Changes:
        return merge(layer_learned, {"optim": {"name": "sgd", "lr": lr}, "schedule": constant})

    adamw = {"optim": {"name": "adamw", "lr": cfg.optim.lr}, "schedule": constant}
    cosine = merge(adamw, {"schedule": {"name": "cosine", "warmup_steps": lc.warmup_steps}})

    def tuned(lr: float) -> Changes:
        return merge(rms_rope, cosine, {"optim": {"lr": lr}, "schedule": {"min_lr": lr / 10}})

    def short(name: str, settings: str, seed: int, change: Changes) -> ShortRun:
        return run_short(cfg, profile, packed, tok_sha, "ladder", name, settings, seed, change)

    sgd_search = search_lr(lambda lr: short(f"sgd lr {lr:g}", f"rung 0 at lr {lr:g}", seed0, sgd(lr)), lc.sgd_lrs)
    adamw_search = search_lr(lambda lr: short(f"lr {lr:g}", f"rung 4 at lr {lr:g}", seed0, tuned(lr)), lc.tuned_lrs)
    sgd_lr, best_lr = sgd_search.best_lr, adamw_search.best_lr
    rungs: list[tuple[str, str, Changes]] = [
        ("0 baseline", f"SGD (momentum 0.9, tuned lr {sgd_lr:g}), constant lr, LayerNorm, learned positions", sgd(sgd_lr)),
        ("1 +AdamW", f"AdamW (lr {cfg.optim.lr:g})", merge(layer_learned, adamw)),
        ("2 +warm-up, cosine", f"{lc.warmup_steps} warm-up steps, cosine to lr/10", merge(layer_learned, cosine)),
        ("3 +RMSNorm", "RMSNorm instead of LayerNorm", merge(layer_learned, {"model": {"norm": "rmsnorm"}}, cosine)),
        ("4 +RoPE", "rotary positions instead of learned", merge(rms_rope, cosine)),
        ("5 +tuned lr", f"lr {best_lr:g} (searched on seed {seed0})", tuned(best_lr)),
    ]
    # seed 0 of the first and last rung is the search's own best run (the same config and seed): reuse it
    searched = {("0 baseline", seed0): sgd_search.best_run, ("5 +tuned lr", seed0): adamw_search.best_run}
    runs = [replace(searched[name, s], name=name, settings=settings) if (name, s) in searched
            else short(name, settings, s, change) for name, settings, change in rungs for s in lc.seeds]
    return Ladder(runs, sgd_search, adamw_search)


@dataclass
class TokenizerComparison:
    """The hand-written BPE against sentencepiece: the bench (training time, encoding speed, bytes per token on
    val) and the same short-run model trained on each one's packed stream (val bits per byte, every seed)."""

    bench: pd.DataFrame  # one row per tokenizer, see week05_lm_pipeline.bench_tokenizer.COLUMNS
    runs: dict[str, list[ShortRun]]  # tokenizer -> one run per seed
    bits_per_byte: dict[str, list[float]]  # tokenizer -> val bits per byte per seed (inf for a diverged run)


def compare_tokenizers(cfg: Week05Config, profile: str, corpus) -> TokenizerComparison:
    """Bench both tokenizers on the corpus, then train the short-run model on each one's data (seeds of the
    ladder), with the val loss over the whole val stream, turned into bits per byte."""
    from shared.data.lm import pack_stage, tokenizer_stage
    from week05_lm_pipeline.bench_tokenizer import bench_tokenizers
    from week05_lm_pipeline.stages import set_vocab

    bench = bench_tokenizers(corpus.train, corpus.val, cfg.data.vocab_size,
                             runs_root() / WEEK / profile / "tokenizer_bench.csv")
    runs, bpb = {}, {}
    for kind in cfg.compare.tokenizers:
        c = copy.deepcopy(cfg)
        c.data = replace(cfg.data, tokenizer=kind)
        c.short = replace(cfg.short, eval_tokens=0)  # the whole val stream: bits per byte needs its byte count
        tk = tokenizer_stage(c.data, corpus, WEEK, 0)
        packed = pack_stage(c.data, corpus, tk.tokenizer, WEEK, c.short.block_size)
        set_vocab(c, tk)
        runs[kind] = [run_short(c, profile, packed, tk.tokenizer.sha256, "tokenizer", kind, f"{kind} tokenizer", s)
                      for s in cfg.ladder.seeds]
        val = packed.splits["val"]
        bpb[kind] = [float("inf") if r.final_loss is None else bits_per_byte(r.final_loss, val.tokens, val.utf8_bytes)
                     for r in runs[kind]]
    return TokenizerComparison(bench, runs, bpb)


def bench_grid(cfg: Week05Config, profile: str, packed, tok_sha: str) -> tuple[pd.DataFrame, str]:
    """tokens/s, ms/step and peak memory of the main model for every (sequence length, micro-batch) pair (and
    compiled or not, on a GPU with ``loop.compile``); writes ``runs/week05/<profile>/bench.csv``."""
    loop = cfg.loop
    device = resolve_device(loop.device)
    train, _ = open_streams(packed, tok_sha)
    peak, source = mfu_peak(device, loop.precision)
    compiles = [False, True] if loop.compile and device.type == "cuda" else [False]
    rows = []
    for compiled in compiles:
        for t in cfg.bench.seq_lens:
            for b in cfg.bench.micro_batches:
                seed_everything(0)
                model = GPT(replace(cfg.model, block_size=t)).to(device)
                m = time_train_steps(model, LMTask(train, train, t, 0, 1, b), cfg.optim, micro_batch=b,
                                     steps=cfg.bench.steps, warmup=cfg.bench.warmup, precision=loop.precision,
                                     grad_clip=loop.grad_clip, compiled=compiled)
                tok_s = m["tokens_per_sec"]
                rows.append({"seq_len": t, "micro_batch": b, "compile": compiled, "ms_per_step": m["ms_per_step"],
                             "tokens_per_sec": tok_s, "mfu": tok_s * model.flops_per_token() / peak if peak else np.nan,
                             "peak_mem_gib": m["peak_mem_gib"]})
    table = pd.DataFrame(rows)
    atomic_write_text(runs_root() / WEEK / profile / "bench.csv", table.to_csv(index=False))
    return table, source
