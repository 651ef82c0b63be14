"""The week's measurements beyond the main run: the throughput/memory grid, the stabilisation ablation and the
modernisation ladder. Ablation and ladder runs are short (``cfg.short``: a small model, a fixed token budget),
each in its own run directory keyed by its config, so a rerun of the week reuses finished runs.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from shared.atomic import atomic_write_text
from shared.data.pack import open_token_file
from shared.flops import mfu_peak
from shared.models.gpt import GPT, GPTConfig
from shared.paths import runs_root
from shared.repro import seed_everything
from shared.rundir import finish_run, start_run
from shared.tracking import MetricLogger, console
from shared.train.lm import run_identity, time_train_steps, train_lm
from shared.train.perplexity import stream_loss
from shared.train.step import NonFiniteLossError
from shared.train.trainer import resolve_device
from week05_lm_pipeline.config import TrainRunConfig, Week05Config
from week05_lm_pipeline.stages import WEEK, PackOut


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


def _short_config(cfg: Week05Config, model: dict[str, Any], train: dict[str, Any], seed: int) -> TrainRunConfig:
    s = cfg.short
    mcfg = GPTConfig(**{**asdict(cfg.model), "n_layer": s.n_layer, "n_head": s.n_head, "n_embd": s.n_embd,
                        "block_size": s.block_size, "dropout": 0.0, **model})
    budget = {"max_steps": s.max_steps, "micro_batch": s.micro_batch, "eval_every": s.eval_every,
              "eval_iters": s.eval_iters, "log_every": 10, "compile": False, "seed": seed}
    tcfg = replace(run_identity(cfg.train), **{**budget, **train}, progress=False)
    return TrainRunConfig(cfg.data, mcfg, tcfg)


def run_short(cfg: Week05Config, profile: str, packed: PackOut, tok_sha: str, group: str, name: str, settings: str,
              seed: int, model: dict[str, Any] | None = None, train: dict[str, Any] | None = None) -> ShortRun:
    """Train (or reuse) one short run; a divergence is a result, not an error."""
    rc = _short_config(cfg, model or {}, train or {}, seed)
    run = start_run(WEEK, f"{group}-{name.replace(' ', '_').replace(',', '')}-s{seed}", profile, rc)
    device = resolve_device(rc.train.device)
    train_data, _ = open_token_file(packed.dir / "train.bin", tok_sha)
    val_data, _ = open_token_file(packed.dir / "val.bin", tok_sha)
    seed_everything(seed)
    net = GPT(rc.model).to(device)
    logger = MetricLogger(run.dir, run.run_id, seed, tensorboard=False)
    diverged, final, t0 = None, None, time.perf_counter()
    try:
        result = train_lm(net, train_data, val_data, rc.train, rc.model.block_size, run.dir, logger,
                          meta={"model": asdict(rc.model)})
        final = stream_loss(net, val_data, rc.model.block_size, 16, rc.train.precision,
                            max_tokens=cfg.short.eval_tokens)["loss"]
        finish_run(run, seed, {"val_loss": final}, result.train_time_s)
    except NonFiniteLossError as e:
        diverged = e.step
    logger.close()
    rows = pd.read_csv(run.dir / "metrics.csv")
    train_rows = rows[rows.phase == "train"]
    console(f"{group} / {name} / seed {seed}: " + (f"val {final:.4f}" if final is not None else f"diverged at {diverged}"))
    return ShortRun(group, name, seed, settings, final, diverged, float(train_rows.loss.max()), time.perf_counter() - t0)


def stabilisation_ablation(cfg: Week05Config, profile: str, packed: PackOut, tok_sha: str) -> list[ShortRun]:
    """Warm-up, clipping and accumulation varied one at a time from a stable baseline, then a too-high lr
    with and without warm-up and clipping."""
    a, k = cfg.ablation, cfg.ablation.accum_k
    base = {"warmup_steps": a.warmup_steps, "grad_clip": a.grad_clip}
    high = {"lr": a.high_lr, "min_lr": a.high_lr / 10}
    variants = [
        ("baseline", f"warm-up {a.warmup_steps}, clip {a.grad_clip}, accumulation 1, lr {cfg.train.lr:g}", {}),
        ("no warm-up", "warm-up 0", {"warmup_steps": 0}),
        ("no clipping", "clip off", {"grad_clip": 0.0}),
        (f"accumulation {k}", f"{cfg.short.micro_batch // k} x {k} micro-batches (same global batch)",
         {"micro_batch": cfg.short.micro_batch // k, "grad_accum_steps": k}),
        ("high lr, stabilised", f"lr {a.high_lr:g} with warm-up and clipping", high),
        ("high lr, unprotected", f"lr {a.high_lr:g}, no warm-up, no clipping", {**high, "warmup_steps": 0, "grad_clip": 0.0}),
    ]
    return [run_short(cfg, profile, packed, tok_sha, "ablation", name, settings, cfg.ladder.seeds[0],
                      train={**base, **change}) for name, settings, change in variants]


def ladder(cfg: Week05Config, profile: str, packed: PackOut, tok_sha: str) -> tuple[list[ShortRun], list[ShortRun]]:
    """The modernisation ladder, every rung on every seed; returns (rungs, the lr-tuning runs of the last rung)."""
    lc, a = cfg.ladder, cfg.ablation
    sgd = {"optimizer": "sgd", "lr": lc.sgd_lr, "schedule": "constant", "warmup_steps": 0}
    adamw = {"optimizer": "adamw", "lr": cfg.train.lr, "schedule": "constant", "warmup_steps": 0}
    cosine = {**adamw, "schedule": "cosine", "warmup_steps": a.warmup_steps}
    layer_learned = {"norm": "layernorm", "pos": "learned"}
    rungs: list[tuple[str, str, dict, dict]] = [
        ("0 baseline", f"SGD (momentum 0.9, lr {lc.sgd_lr:g}), constant lr, LayerNorm, learned positions", layer_learned, sgd),
        ("1 +AdamW", f"AdamW (lr {cfg.train.lr:g})", layer_learned, adamw),
        ("2 +warm-up, cosine", f"{a.warmup_steps} warm-up steps, cosine to lr/10", layer_learned, cosine),
        ("3 +RMSNorm", "RMSNorm instead of LayerNorm", {**layer_learned, "norm": "rmsnorm"}, cosine),
        ("4 +RoPE", "rotary positions instead of learned", {"norm": "rmsnorm", "pos": "rope"}, cosine),
    ]
    seed0 = lc.seeds[0]
    tuning = [run_short(cfg, profile, packed, tok_sha, "ladder", f"lr {lr:g}", f"rung 4 at lr {lr:g}", seed0,
                        rungs[-1][2], {**cosine, "lr": lr, "min_lr": lr / 10}) for lr in lc.tuned_lrs]
    runs = [run_short(cfg, profile, packed, tok_sha, "ladder", name, settings, s, m, t)
            for name, settings, m, t in rungs for s in lc.seeds]
    candidates = [(r.final_loss, float(cfg.train.lr)) for r in runs if r.name == "4 +RoPE" and r.seed == seed0]
    candidates += [(r.final_loss, lr) for r, lr in zip(tuning, lc.tuned_lrs, strict=True)]
    best_lr = min((c for c in candidates if c[0] is not None), default=(None, cfg.train.lr))[1]
    runs += [run_short(cfg, profile, packed, tok_sha, "ladder", "5 +tuned lr", f"lr {best_lr:g} (best on seed {seed0})",
                       s, rungs[-1][2], {**cosine, "lr": best_lr, "min_lr": best_lr / 10}) for s in lc.seeds]
    return runs, tuning


def bench_grid(cfg: Week05Config, profile: str, packed: PackOut, tok_sha: str) -> tuple[pd.DataFrame, str]:
    """tokens/s, ms/step and peak memory of the main model for every (sequence length, micro-batch) pair (and
    compiled or not, on a GPU with ``train.compile``); writes ``runs/week05/<profile>/bench.csv``."""
    device = resolve_device(cfg.train.device)
    data, _ = open_token_file(packed.dir / "train.bin", tok_sha)
    peak, source = mfu_peak(device, cfg.train.precision)
    compiles = [False, True] if cfg.train.compile and device.type == "cuda" else [False]
    rows = []
    for compiled in compiles:
        for t in cfg.bench.seq_lens:
            for b in cfg.bench.micro_batches:
                seed_everything(0)
                model = GPT(GPTConfig(**{**asdict(cfg.model), "block_size": t})).to(device)
                m = time_train_steps(model, data, cfg.train, b, t, cfg.bench.steps, cfg.bench.warmup, compiled)
                tok_s = m["tokens_per_sec"]
                rows.append({"seq_len": t, "micro_batch": b, "compile": compiled, "ms_per_step": m["ms_per_step"],
                             "tokens_per_sec": tok_s, "mfu": tok_s * model.flops_per_token() / peak if peak else np.nan,
                             "peak_mem_gib": m["peak_mem_gib"]})
    table = pd.DataFrame(rows)
    atomic_write_text(runs_root() / WEEK / profile / "bench.csv", table.to_csv(index=False))
    return table, source
