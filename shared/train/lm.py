"""Training a language model by steps: random token blocks, AdamW, warm-up + cosine, periodic evals, resume.

An LM run is measured in optimizer steps, not epochs: each step draws fresh random blocks from the token
stream (:func:`shared.data.text.random_batch`, a pure function of ``(seed, step)``), and validation loss
is estimated every ``eval_every`` steps on the same fixed val batches, so evals are comparable. A
checkpoint holds the weights, the optimizer, the step and the eval history, which is all an exact
resume needs (the next batch depends on the step only).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shared.amp import autocast, grad_scaler
from shared.checkpoint import load_checkpoint, load_model_state, save_checkpoint, unwrap
from shared.data.text import random_batch
from shared.flops import mfu
from shared.repro import rng_state, set_rng_state
from shared.tracking import MetricLogger, console, format_step, progress_enabled
from shared.train.step import NonFiniteLossError, train_step

EVAL_SEED_OFFSET = 1_000  # eval batches use seed + this (train) and seed + 2x this (val): never a training batch


@dataclass
class LMTrainConfig:
    """Steps, batch, optimizer, schedule and eval cadence of an LM run."""

    max_steps: int = 5000  # optimizer steps
    micro_batch: int = 64  # sequences per forward pass (B)
    grad_accum_steps: int = 1  # micro-batches per optimizer step: tokens/step = micro_batch x this x block_size
    optimizer: str = "adamw"  # "adamw" or "sgd" (momentum; the baseline of week 5's ladder)
    momentum: float = 0.9  # SGD only
    lr: float = 1e-3  # peak learning rate (after warm-up)
    min_lr: float = 1e-4  # the cosine decays to this at max_steps
    warmup_steps: int = 100  # linear warm-up from lr/warmup_steps
    schedule: str = "cosine"  # "cosine" (warm-up, then cosine to min_lr) or "constant" (warm-up, then lr)
    weight_decay: float = 0.1  # decoupled, on weight matrices only (not norms, biases or embeddings)
    beta1: float = 0.9  # AdamW
    beta2: float = 0.99  # AdamW (0.99 rather than 0.999: small models, few tokens per step)
    grad_clip: float = 1.0  # clip the global gradient norm (0 = off)
    precision: str = "fp32"  # "fp32", "bf16" (autocast) or "fp16" (autocast + GradScaler)
    compile: bool = False  # torch.compile the model for training and eval
    fused_adamw: bool = True  # the fused CUDA AdamW kernel (GPU only; ignored on CPU)
    eval_every: int = 250  # steps between evals (and at step 0 and at the end)
    eval_iters: int = 20  # batches per eval estimate
    log_every: int = 10  # steps between train rows (loss, lr, tokens/s, MFU)
    ckpt_every: int = 0  # also save last.pt every N steps (0: at every eval)
    stop_at: int = 0  # stop after N steps as if interrupted, keeping the max_steps schedule (0: run to the end)
    seed: int = 1337  # batch order and init
    device: str = "auto"  # "auto", "cpu", "cuda", ...
    resume: bool = True  # continue from <run_dir>/checkpoints/last.pt when it exists
    progress: bool = True  # tqdm bar (only at a terminal, never under CI)


def run_identity(cfg: LMTrainConfig) -> LMTrainConfig:
    """``cfg`` without the settings that only say when to stop or how to show progress (``stop_at``, ``resume``,
    ``progress``): hash this, not ``cfg``, to name a run's directory, so stopping early and running again resumes
    the same run instead of starting a new one."""
    return replace(cfg, stop_at=0, resume=True, progress=True)


def lr_at(step: int, cfg: LMTrainConfig) -> float:
    """Learning rate at ``step`` (0-based): linear warm-up to ``lr`` over ``warmup_steps``, then constant or a
    cosine from ``lr`` down to ``min_lr`` at ``max_steps`` (Loshchilov & Hutter 2017, https://arxiv.org/abs/1608.03983).

    Raises:
        ValueError: unknown schedule.
    """
    if cfg.schedule not in ("cosine", "constant"):
        raise ValueError(f"unknown train.schedule '{cfg.schedule}'. Known: cosine, constant")
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    progress = min((step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps), 1.0)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def adamw_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: weight decay on matrices (dim >= 2) except embeddings, none on norms, biases and
    embeddings (decaying a gain or an embedding row pulls it towards 0 for no benefit). A tied weight
    appears once, under its embedding."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for p in model.parameters():  # .parameters() yields a shared (tied) parameter once
        if p.requires_grad:
            (decay if p.dim() >= 2 and id(p) not in embeddings else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_adamw(model: nn.Module, cfg: LMTrainConfig) -> torch.optim.Optimizer:
    """AdamW (Loshchilov & Hutter 2019, https://arxiv.org/abs/1711.05101) over :func:`adamw_param_groups`, or
    SGD with momentum over the same groups when ``cfg.optimizer == "sgd"``.

    Raises:
        ValueError: unknown optimizer.
    """
    groups = adamw_param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.optimizer != "adamw":
        raise ValueError(f"unknown train.optimizer '{cfg.optimizer}'. Known: adamw, sgd")
    on_cuda = next(model.parameters()).device.type == "cuda"
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=cfg.fused_adamw and on_cuda)


def lm_loss(out: torch.Tensor | tuple[torch.Tensor, Any], y: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats/token) of logits (B, T, V), or of a model's ``(logits, _)``."""
    logits = out[0] if isinstance(out, tuple) else out
    return F.cross_entropy(logits.float().flatten(0, 1), y.flatten())


@torch.no_grad()
def estimate_loss(model: nn.Module, data: torch.Tensor, cfg: LMTrainConfig, block_size: int, seed: int,
                  device: torch.device) -> float:
    """Mean loss (nats/token) over ``cfg.eval_iters`` batches fixed by ``seed`` (the same batches every call)."""
    was_training = model.training
    model.eval()
    total = 0.0
    for i in range(cfg.eval_iters):
        x, y = random_batch(data, cfg.micro_batch, block_size, seed, i, device)
        with autocast(device, cfg.precision):
            total += lm_loss(model(x), y).item()
    model.train(was_training)
    return total / cfg.eval_iters


def time_train_steps(model: nn.Module, data: torch.Tensor | Any, cfg: LMTrainConfig, batch_size: int, block_size: int,
                     steps: int, warmup: int, compiled: bool = False, seed: int = 0) -> dict[str, float]:
    """Throughput of ``steps`` training steps of ``model`` (after ``warmup`` untimed ones, which also absorb
    ``torch.compile``'s compilation), with ``cfg``'s optimizer, precision and clipping, on batches of ``data``.

    Returns:
        ``{"ms_per_step", "tokens_per_sec", "peak_mem_gib"}`` (peak memory: see :func:`shared.profiling.peak_memory_gib`).
    """
    from shared.profiling import peak_memory_gib, reset_peak_memory

    device = next(model.parameters()).device
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    fwd = torch.compile(model) if compiled else model
    opt, scaler = build_adamw(model, cfg), grad_scaler(device, cfg.precision)
    reset_peak_memory(device)
    for i in range(warmup + steps):
        if i == warmup:
            sync()
            t0 = time.perf_counter()
        train_step(fwd, opt, [random_batch(data, batch_size, block_size, seed, i, device)], lm_loss,
                   precision=cfg.precision, scaler=scaler, grad_clip=cfg.grad_clip)
    sync()
    dt = (time.perf_counter() - t0) / steps
    return {"ms_per_step": 1e3 * dt, "tokens_per_sec": batch_size * block_size / dt, "peak_mem_gib": peak_memory_gib(device)}


@dataclass
class LMResult:
    """What :func:`train_lm` returns: the eval history (one dict per eval) and the run's totals."""

    step: int
    evals: list[dict[str, Any]]
    train_time_s: float  # seconds in training steps (evals excluded), summed over resumes
    tokens: int  # training tokens consumed
    resumed_from: int = 0  # the step this process started at (0: a fresh run)
    checkpoints: dict[str, Path] = field(default_factory=dict)


OnEval = Callable[[int, nn.Module, dict[str, Any]], None]


class LMTrainer:
    """The step loop of :func:`train_lm`, with its state (``self.p``) split from its phases."""

    def __init__(self, model: nn.Module, train_data: torch.Tensor, val_data: torch.Tensor, cfg: LMTrainConfig,
                 block_size: int, run_dir: str | Path, logger: MetricLogger, on_eval: OnEval | None,
                 meta: dict[str, Any] | None, flops_per_token: float | None, peak_flops: float | None,
                 t_start: float | None) -> None:
        self.model, self.train_data, self.val_data, self.cfg = model, train_data, val_data, cfg
        self.block_size, self.logger, self.on_eval = block_size, logger, on_eval
        self.flops_per_token, self.peak_flops = flops_per_token, peak_flops
        self.t_start = time.perf_counter() if t_start is None else t_start
        self.device = next(model.parameters()).device
        self.optimizer = build_adamw(model, cfg)
        self.scaler = grad_scaler(self.device, cfg.precision)
        ckpt_dir = Path(run_dir) / "checkpoints"
        self.last, self.best = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
        self.meta = {**(meta or {}), "train": asdict(cfg)}
        self.tokens_per_step = cfg.micro_batch * cfg.grad_accum_steps * block_size
        self.p: dict[str, Any] = {"step": 0, "evals": [], "train_time_s": 0.0, "wall_s_before": 0.0, "best_val": None}
        self.stats: dict[str, torch.Tensor] = {}
        self.fwd = model  # replaced by the compiled module in fit()

    def wall(self) -> float:
        """Seconds since process start, plus the earlier processes' share when resumed."""
        return self.p["wall_s_before"] + time.perf_counter() - self.t_start

    def save(self, path: Path) -> None:
        save_checkpoint(path, self.model, self.optimizer, progress={**self.p, "wall_s_before": self.wall()},
                        rng=rng_state(), meta=self.meta)
        self.logger.flush()

    def resume(self) -> None:
        if self.cfg.resume and self.last.is_file():
            state = load_checkpoint(self.last, map_location="cpu")
            load_model_state(self.model, state, source=str(self.last))
            self.optimizer.load_state_dict(state["optimizer"])
            set_rng_state(state["rng"])
            self.p.update(state["progress"])
            console(f"resumed from {self.last} at step {self.p['step']}")
        self.logger.resume(step=self.p["step"])

    def evaluate(self) -> None:
        """Estimate train and val loss, call ``on_eval``, log, and save last.pt (and best.pt on a new best)."""
        p, cfg = self.p, self.cfg
        record = {"step": p["step"], "tokens": p["step"] * self.tokens_per_step,
                  "train_loss": estimate_loss(self.fwd, self.train_data, cfg, self.block_size,
                                              cfg.seed + EVAL_SEED_OFFSET, self.device),
                  "val_loss": estimate_loss(self.fwd, self.val_data, cfg, self.block_size,
                                            cfg.seed + 2 * EVAL_SEED_OFFSET, self.device),
                  "train_time_s": p["train_time_s"], "wall_s": self.wall()}
        if self.on_eval is not None:
            self.on_eval(p["step"], unwrap(self.model), record)
        p["evals"].append(record)
        self.logger.log("val", p["step"], 0, loss=record["val_loss"], train_loss=record["train_loss"],
                        wall_s=record["wall_s"])
        console(format_step(p["step"], {"train_loss": record["train_loss"], "val_loss": record["val_loss"]}))
        if p["best_val"] is None or record["val_loss"] < p["best_val"]:
            p["best_val"] = record["val_loss"]
            self.save(self.best)
        self.save(self.last)

    def step(self) -> torch.Tensor:
        """One optimizer step at the scheduled lr; returns the mean loss (0-dim tensor, not synchronised)."""
        cfg, step = self.cfg, self.p["step"]
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        k = cfg.grad_accum_steps
        micro = [random_batch(self.train_data, cfg.micro_batch, self.block_size, cfg.seed, step * k + i, self.device)
                 for i in range(k)]
        try:
            loss = train_step(self.fwd, self.optimizer, micro, lm_loss, precision=cfg.precision, scaler=self.scaler,
                              grad_clip=cfg.grad_clip, stats=self.stats)
        except NonFiniteLossError as e:
            self.logger.flush()  # keep the rows up to the divergence (no checkpoint: the state is not worth resuming)
            raise NonFiniteLossError(f"step {step}: {e}", step=step) from e
        self.p["step"] += 1
        return loss

    def log_row(self, loss: torch.Tensor, steps: int, seconds: float) -> dict[str, float]:
        tok_s = steps * self.tokens_per_step / max(seconds, 1e-9)
        row = {"loss": loss.item(), "lr": self.optimizer.param_groups[0]["lr"], "tokens_per_sec": tok_s}
        if "grad_norm" in self.stats:
            row["grad_norm"] = self.stats["grad_norm"].item()
        if (u := mfu(tok_s, self.flops_per_token or 0.0, self.peak_flops)) is not None:
            row["mfu"] = u
        self.logger.log("train", self.p["step"], 0, **row)
        return row

    def fit(self) -> LMResult:
        from tqdm import tqdm

        cfg, p = self.cfg, self.p
        self.resume()
        resumed_from = p["step"]
        self.fwd = torch.compile(self.model) if cfg.compile else self.model
        bar = tqdm(total=cfg.max_steps, initial=p["step"], desc="train", leave=False,
                   disable=not (cfg.progress and progress_enabled()))
        self.model.train()
        try:
            if p["step"] == 0:
                self.evaluate()  # the untrained model: its loss should be about ln(vocab_size)
            t_log, since_log = time.perf_counter(), 0
            while p["step"] < cfg.max_steps:
                if cfg.stop_at and p["step"] >= cfg.stop_at:
                    self.save(self.last)
                    break
                t0 = time.perf_counter()
                loss = self.step()
                since_log += 1
                bar.update(1)
                done = p["step"] == cfg.max_steps
                if p["step"] % cfg.log_every == 0 or done:
                    now = time.perf_counter()  # .item() in log_row waits for the GPU: time after it
                    row = self.log_row(loss, since_log, now - t_log)
                    bar.set_postfix(loss=f"{row['loss']:.4f}", tok_s=f"{row['tokens_per_sec']:,.0f}")
                    t_log, since_log = now, 0
                p["train_time_s"] += time.perf_counter() - t0
                if p["step"] % cfg.eval_every == 0 or done:
                    self.evaluate()
                    t_log, since_log = time.perf_counter(), 0  # tokens/s leaves eval time out
                elif cfg.ckpt_every and p["step"] % cfg.ckpt_every == 0:
                    self.save(self.last)
        except KeyboardInterrupt:
            self.save(self.last)
            console(f"interrupted: saved {self.last} at step {p['step']}; run the same command again to resume")
            raise
        finally:
            bar.close()
        self.logger.flush()
        return LMResult(p["step"], p["evals"], p["train_time_s"], p["step"] * self.tokens_per_step,
                        resumed_from, {"last": self.last, "best": self.best})


def train_lm(model: nn.Module, train_data: torch.Tensor, val_data: torch.Tensor, cfg: LMTrainConfig,
             block_size: int, run_dir: str | Path, logger: MetricLogger, *, on_eval: OnEval | None = None,
             meta: dict[str, Any] | None = None, flops_per_token: float | None = None,
             peak_flops: float | None = None, t_start: float | None = None) -> LMResult:
    """Train ``model`` (maps (B, T) ids to logits or ``(logits, _)``) for ``cfg.max_steps`` steps, or resume.

    Evals run at step 0, every ``cfg.eval_every`` steps and at the end; each one saves ``last.pt``.

    Args:
        train_data, val_data: (N,) int64 token streams.
        block_size: T of every batch.
        run_dir: checkpoints go to ``run_dir/checkpoints/{last,best}.pt`` (best = lowest val loss).
        on_eval: called after each eval with ``(step, model, record)``; may add JSON-able keys to
            ``record`` (e.g. a sample), which is checkpointed with the eval history.
        meta: JSON-able run description stored with every checkpoint.
        flops_per_token, peak_flops: for the MFU column of the train rows (left out when either is None).
        t_start: ``time.perf_counter()`` at process start; evals record ``wall_s`` since then.

    Raises:
        NonFiniteLossError: the loss became NaN/inf (the message names the step and what to try).
        CheckpointError: ``last.pt`` belongs to another model.
    """
    return LMTrainer(model, train_data, val_data, cfg, block_size, run_dir, logger, on_eval, meta,
                     flops_per_token, peak_flops, t_start).fit()
