"""The week's measurements beyond the main run: the throughput/memory grid, the stabilisation ablation and the
modernisation ladder. Ablation and ladder runs are short (``cfg.short``: a small model, a fixed token budget),
each in its own run directory keyed by its config, so a rerun of the week reuses finished runs.
"""

from __future__ import annotations

import time
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
from shared.train.perplexity import stream_loss
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
    final_loss: float | None  # nats/token on the fixed eval set; None when the run diverged
    diverged_at: int | None  # the step whose loss was NaN/inf
    max_train_loss: float
    train_time_s: float


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


def run_short(cfg: Week05Config, profile: str, packed, tok_sha: str, group: str, name: str, settings: str,
              seed: int, changes: Changes | None = None) -> ShortRun:
    """Train (or reuse) one short run; a divergence is a result, not an error."""
    setup = short_setup(cfg, changes or {}, seed)
    run_name = f"{group}-{name.replace(' ', '_').replace(',', '')}-s{seed}"
    run_cfg = train_run_config(cfg.data, setup)
    train, val = open_streams(packed, tok_sha)
    diverged, final, t0 = None, None, time.perf_counter()

    def final_loss(model: GPT, _) -> dict[str, float]:
        return {"val_loss": stream_loss(model, val, setup.model.block_size, 16, setup.loop.precision,
                                        max_tokens=cfg.short.eval_tokens)["loss"]}

    try:
        lm = pretrain(WEEK, run_name, profile, run_cfg, setup, train, val, tokenizer_sha256=tok_sha,
                      tensorboard=False, result_metrics=final_loss)
        final = final_loss(lm.model, None)["val_loss"] if lm.record is None else lm.record["metrics"]["val_loss"]
    except NonFiniteLossError as e:
        diverged = e.step
    rows = pd.read_csv(run_path(WEEK, run_name, profile, run_cfg) / "metrics.csv")
    train_rows = rows[rows.phase == "train"]
    console(f"{group} / {name} / seed {seed}: " + (f"val {final:.4f}" if final is not None else f"diverged at {diverged}"))
    return ShortRun(group, name, seed, settings, final, diverged, float(train_rows.loss.max()), time.perf_counter() - t0)


def stabilisation_ablation(cfg: Week05Config, profile: str, packed, tok_sha: str) -> list[ShortRun]:
    """Warm-up, clipping and accumulation varied one at a time from a stable baseline, then a too-high lr
    with and without warm-up and clipping."""
    a, k = cfg.ablation, cfg.ablation.accum_k
    base = {"schedule": {"warmup_steps": a.warmup_steps}, "loop": {"grad_clip": a.grad_clip}}
    high = {"optim": {"lr": a.high_lr}, "schedule": {"min_lr": a.high_lr / 10}}
    bare = {"schedule": {"warmup_steps": 0}, "loop": {"grad_clip": 0.0}}
    variants: list[tuple[str, str, Changes]] = [
        ("baseline", f"warm-up {a.warmup_steps}, clip {a.grad_clip}, accumulation 1, lr {cfg.optim.lr:g}", {}),
        ("no warm-up", "warm-up 0", {"schedule": {"warmup_steps": 0}}),
        ("no clipping", "clip off", {"loop": {"grad_clip": 0.0}}),
        (f"accumulation {k}", f"{cfg.short.micro_batch // k} x {k} micro-batches (same global batch)",
         {"loop": {"micro_batch": cfg.short.micro_batch // k, "grad_accum_steps": k}}),
        ("high lr, stabilised", f"lr {a.high_lr:g} with warm-up and clipping", high),
        ("high lr, unprotected", f"lr {a.high_lr:g}, no warm-up, no clipping", merge(high, bare)),
    ]
    return [run_short(cfg, profile, packed, tok_sha, "ablation", name, settings, cfg.ladder.seeds[0],
                      merge(base, change)) for name, settings, change in variants]


def ladder(cfg: Week05Config, profile: str, packed, tok_sha: str) -> tuple[list[ShortRun], list[ShortRun]]:
    """The modernisation ladder, every rung on every seed; returns (rungs, the lr-tuning runs of the last rung)."""
    lc, a = cfg.ladder, cfg.ablation
    constant = {"name": "constant", "warmup_steps": 0}
    sgd = {"optim": {"name": "sgd", "lr": lc.sgd_lr}, "schedule": constant}
    adamw = {"optim": {"name": "adamw", "lr": cfg.optim.lr}, "schedule": constant}
    cosine = merge(adamw, {"schedule": {"name": "cosine", "warmup_steps": a.warmup_steps}})
    layer_learned = {"model": {"norm": "layernorm", "pos": "learned"}}
    rms_rope = {"model": {"norm": "rmsnorm", "pos": "rope"}}
    rungs: list[tuple[str, str, Changes]] = [
        ("0 baseline", f"SGD (momentum 0.9, lr {lc.sgd_lr:g}), constant lr, LayerNorm, learned positions",
         merge(layer_learned, sgd)),
        ("1 +AdamW", f"AdamW (lr {cfg.optim.lr:g})", merge(layer_learned, adamw)),
        ("2 +warm-up, cosine", f"{a.warmup_steps} warm-up steps, cosine to lr/10", merge(layer_learned, cosine)),
        ("3 +RMSNorm", "RMSNorm instead of LayerNorm", merge(layer_learned, {"model": {"norm": "rmsnorm"}}, cosine)),
        ("4 +RoPE", "rotary positions instead of learned", merge(rms_rope, cosine)),
    ]
    seed0 = lc.seeds[0]

    def tuned(lr: float) -> Changes:
        return merge(rms_rope, cosine, {"optim": {"lr": lr}, "schedule": {"min_lr": lr / 10}})

    tuning = [run_short(cfg, profile, packed, tok_sha, "ladder", f"lr {lr:g}", f"rung 4 at lr {lr:g}", seed0, tuned(lr))
              for lr in lc.tuned_lrs]
    runs = [run_short(cfg, profile, packed, tok_sha, "ladder", name, settings, s, change)
            for name, settings, change in rungs for s in lc.seeds]
    candidates = [(r.final_loss, float(cfg.optim.lr)) for r in runs if r.name == "4 +RoPE" and r.seed == seed0]
    candidates += [(r.final_loss, lr) for r, lr in zip(tuning, lc.tuned_lrs, strict=True)]
    best_lr = min((c for c in candidates if c[0] is not None), default=(None, cfg.optim.lr))[1]
    runs += [run_short(cfg, profile, packed, tok_sha, "ladder", "5 +tuned lr", f"lr {best_lr:g} (best on seed {seed0})",
                       s, tuned(best_lr)) for s in lc.seeds]
    return runs, tuning


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
