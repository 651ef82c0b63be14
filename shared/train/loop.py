"""The one step loop every objective trains with: ``fit(model, task, optimizer, schedule, loop_cfg, ...)``.

The loop knows steps, accumulation, clipping, precision, compile, the schedule, eval/log/checkpoint cadence and
resuming; the task (:class:`shared.tasks.base.Task`) knows its batches, its loss and its eval; the parallel strategy
(:class:`shared.parallel.Parallel`) knows wrapping, gradient sync and ranks; the checkpointer
(:class:`shared.checkpoint.Checkpointer`) knows files. Exact resume holds because every source of randomness is
either a pure function of the step (the batches) or restored from the checkpoint (weights, optimizer, GradScaler,
RNG), and Ctrl-C stops at a step boundary (the current step finishes, is saved, then the run stops; a second
Ctrl-C stops at once, and saves nothing from inside a step, where the state may be half-updated).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shared.amp import autocast, grad_scaler
from shared.checkpoint import Checkpointer, unwrap
from shared.config import ConfigError
from shared.device import to_device
from shared.flops import mfu
from shared.parallel import Parallel
from shared.repro import rng_state, set_rng_state
from shared.tasks.base import Task
from shared.tracking import MetricLogger, console, format_step, progress_enabled
from shared.train.config import LoopConfig, ScheduleConfig
from shared.train.optim import check_schedule, lr_at, lr_at_progress
from shared.train.step import NonFiniteLossError, train_step

OnEval = Callable[[int, nn.Module, dict[str, Any]], None]


@dataclass
class FitResult:
    """What :func:`fit` returns."""

    step: int  # optimizer steps done (over every process of the run)
    finished: bool  # reached its budget (loop.max_steps, max_tokens or max_seconds; False: stopped by loop.stop_at)
    evals: list[dict[str, Any]]  # one record per eval: step, tokens, the task's metrics, train_time_s, wall_s
    train_time_s: float  # seconds in training steps (evals excluded), summed over resumes
    tokens: int  # training tokens consumed (all ranks)
    resumed_from: int = 0  # the step this process started at (0: a fresh run)
    best: dict[str, Any] | None = None  # {"step", "value"} of the best eval metric
    first_step_s: float | None = None  # seconds from t_start to the end of this process's first training step
    checkpoints: dict[str, Path | None] = field(default_factory=dict)  # "last", "best"
    stopped_by: str = ""  # "max_steps", "max_tokens" or "max_seconds" (the budget that ended it), or "stop_at"
    last_step_s: float = 0.0  # seconds of the last training step (a time budget is passed by less than this)


@contextmanager
def stop_at_step_boundary() -> Iterator[dict[str, bool]]:
    """While active, the first Ctrl-C only sets ``flag["stop"]`` (the loop saves after the current step and raises
    KeyboardInterrupt, which :func:`shared.cli.run_week` turns into one line and exit status 130); a second one
    interrupts at once. Outside the main thread signals cannot be caught: no-op. Both step loops use it (this one
    and :class:`shared.train.trainer.Trainer`)."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"] = True
        console("interrupt: finishing this step and saving (Ctrl-C again to stop at once)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


class _Loop:
    """The state of one :func:`fit` call (``self.p`` is what a checkpoint's progress holds)."""

    def __init__(self, model: nn.Module, task: Task, optimizer: torch.optim.Optimizer, schedule: ScheduleConfig,
                 cfg: LoopConfig, checkpointer: Checkpointer | None, logger: MetricLogger, parallel: Parallel,
                 on_eval: OnEval | None, flops_per_token: float | None, peak_flops: float | None,
                 t_start: float, expect: dict[str, Any] | None) -> None:
        check_schedule(schedule)
        if cfg.best_mode not in ("min", "max"):
            raise ValueError(f"loop.best_mode must be 'min' or 'max', got '{cfg.best_mode}'")
        if cfg.grad_accum_steps < 1 or cfg.micro_batch < 1 or cfg.max_steps < 1:
            raise ValueError("loop.max_steps, loop.micro_batch and loop.grad_accum_steps must be >= 1, got "
                             f"{cfg.max_steps}, {cfg.micro_batch}, {cfg.grad_accum_steps}")
        cfg.validate()
        if cfg.max_tokens < 0 or cfg.max_seconds < 0:
            raise ConfigError(f"loop.max_tokens={cfg.max_tokens} / loop.max_seconds={cfg.max_seconds:g}: a budget "
                              "must be > 0 (or 0 for none)")
        self.model, self.task, self.optimizer, self.schedule, self.cfg = model, task, optimizer, schedule, cfg
        self.checkpointer, self.logger, self.parallel, self.on_eval = checkpointer, logger, parallel, on_eval
        self.flops_per_token, self.peak_flops, self.t_start, self.expect = flops_per_token, peak_flops, t_start, expect
        self.device = next(model.parameters()).device
        self.scaler = grad_scaler(self.device, cfg.precision)
        for group in optimizer.param_groups:  # the schedule scales each group's own peak lr
            group.setdefault("peak_lr", group["lr"])
        self.p: dict[str, Any] = {"step": 0, "evals": [], "train_time_s": 0.0, "wall_s_before": 0.0, "best": None,
                                  "tokens": 0, "step_tokens": 0}
        # the steps the run will take, where known in advance (None for a wall-clock budget): progress and step lines
        self.total_steps: int | None = cfg.max_steps if cfg.budget == "max_steps" else None
        if cfg.max_tokens:
            per_step = task.num_tokens(task.batch(0, parallel.rank, parallel.world_size, cfg.micro_batch))
            per_step *= cfg.grad_accum_steps * parallel.world_size
            cfg.check_token_budget(per_step, parallel.world_size)
            self.total_steps = cfg.max_tokens // per_step
        self.stats: dict[str, torch.Tensor] = {}
        self.in_step = False  # True while weights and optimizer state may be half-updated
        self.first_step_s: float | None = None
        self.fwd = self.eval_fwd = model  # replaced in fit()

    # -- state -------------------------------------------------------------------------------------------------
    def wall(self) -> float:
        """Seconds since ``t_start``, plus the earlier processes' share when resumed."""
        return self.p["wall_s_before"] + time.perf_counter() - self.t_start

    def save(self, best: bool = False) -> None:
        if self.checkpointer is not None:
            state = {"rng": rng_state(), "scaler": self.scaler.state_dict()}
            self.checkpointer.save(self.p["step"], self.model, self.optimizer, state=state, best=best,
                                   progress={**self.p, "wall_s_before": self.wall()})
        self.logger.flush()

    def resume(self) -> None:
        if self.checkpointer is None:
            self.logger.resume(step=0)
            return
        if not self.cfg.resume:
            self.checkpointer.reset()
        elif (ck := self.checkpointer.load(self.model, self.optimizer, "last", self.expect)) is not None:
            self.p.update(ck.progress)
            set_rng_state(ck.state["rng"])
            if ck.state.get("scaler"):
                self.scaler.load_state_dict(ck.state["scaler"])
            console(f"resumed from {ck.path} at step {self.p['step']}")
        self.logger.resume(step=self.p["step"])

    def path(self, which: str) -> Path | None:
        return None if self.checkpointer is None else self.checkpointer.path(which)

    # -- the budget ----------------------------------------------------------------------------------------------
    def budget_reached(self, step_s: float = 0.0) -> bool:
        """True when the run must stop: ``max_steps`` steps done; or the next step would take the tokens past
        ``max_tokens`` (judged by the last step's tokens, so a fixed-size batch never overshoots); or the training
        time, plus ``step_s`` seconds of the step just taken, has reached ``max_seconds`` (overshoot < one step)."""
        cfg, p = self.cfg, self.p
        if cfg.max_tokens:
            return p["tokens"] + p["step_tokens"] > cfg.max_tokens
        if cfg.max_seconds:
            return self.train_seconds(step_s) >= cfg.max_seconds
        return p["step"] >= cfg.max_steps

    def train_seconds(self, step_s: float = 0.0) -> float:
        """Seconds in training steps so far (plus ``step_s``), the same number on every rank: each rank's clock
        differs a little, and ranks that disagreed on when the time is up, or on the lr, would hang or drift apart,
        so the mean over ranks decides (one small all-reduce per call under DDP)."""
        local = self.p["train_time_s"] + step_s
        if self.parallel.world_size == 1:
            return local
        return float(self.parallel.all_reduce_mean(torch.tensor([local], dtype=torch.float64, device=self.device)))

    def lr_share(self) -> float | None:
        """For a token or time budget, the share of the budget after warm-up that has been used (None for a step
        budget); computed once per step (it may all-reduce)."""
        cfg, p = self.cfg, self.p
        if cfg.budget == "max_steps":
            return None
        used = p["tokens"] / cfg.max_tokens if cfg.max_tokens else self.train_seconds() / cfg.max_seconds
        if p["step"] >= self.schedule.warmup_steps:
            p.setdefault("warmup_share", used)  # the share of the budget the warm-up took (saved with progress)
        start = p.get("warmup_share", 0.0)
        return (used - start) / (1.0 - start) if start < 1.0 else 1.0

    def lr(self, peak: float, share: float | None) -> float:
        """The scheduled lr of the next step. A step budget uses :func:`lr_at`; a token or time budget decays by the
        share of the budget used since the end of warm-up (:func:`lr_at_progress`), so the decay ends at the budget."""
        if share is None:
            return lr_at(self.p["step"], self.cfg.max_steps, peak, self.schedule)
        return lr_at_progress(self.p["step"], share, peak, self.schedule)

    # -- phases --------------------------------------------------------------------------------------------------
    def evaluate(self) -> None:
        """Run the task's eval, call ``on_eval``, log, and checkpoint (marking a new best)."""
        p, cfg = self.p, self.cfg
        self.eval_fwd.eval()
        with torch.no_grad(), autocast(self.device, cfg.precision):
            metrics = self.task.evaluate(self.eval_fwd)
        self.model.train()
        record = {"step": p["step"], "tokens": p["tokens"], **metrics, "train_time_s": p["train_time_s"],
                  "wall_s": self.wall()}
        if self.on_eval is not None:
            self.on_eval(p["step"], unwrap(self.model), record)
        p["evals"].append(record)
        self.logger.log("val", p["step"], 0, **{k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                        wall_s=record["wall_s"])
        console(format_step(p["step"], {k: v for k, v in metrics.items() if isinstance(v, float)}, self.total_steps))
        value = metrics.get(cfg.best_metric)
        best = value is not None and (p["best"] is None or (value < p["best"]["value"] if cfg.best_mode == "min"
                                                             else value > p["best"]["value"]))
        if best:
            p["best"] = {"step": p["step"], "value": value}
        self.save(best=best)

    def step(self) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        """One optimizer step at the scheduled lr: ``(mean loss, mean metrics, tokens)`` (tensors not synchronised)."""
        cfg, step, par = self.cfg, self.p["step"], self.parallel
        share = self.lr_share()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr(group["peak_lr"], share)
        k = cfg.grad_accum_steps
        micro = [self.task.batch(step * k + i, par.rank, par.world_size, cfg.micro_batch) for i in range(k)]
        tokens = sum(self.task.num_tokens(b) for b in micro) * par.world_size
        micro = [{name: to_device(t, self.device) for name, t in b.items()} for b in micro]
        try:
            loss, metrics = train_step(self.fwd, self.optimizer, micro, self.task.loss, precision=cfg.precision,
                                       scaler=self.scaler, parallel=par, grad_clip=cfg.grad_clip, stats=self.stats)
        except NonFiniteLossError as e:
            self.logger.flush()  # keep the rows up to the divergence; the last good checkpoint stays as it is
            last = self.path("last")
            keep = f" The last good checkpoint is {last}." if last is not None else ""
            raise NonFiniteLossError(f"step {step}: {e}{keep}", step=step) from e
        self.p["step"] += 1
        self.p["tokens"] += tokens
        self.p["step_tokens"] = tokens
        return loss, metrics, tokens

    def log_row(self, loss: torch.Tensor, metrics: dict[str, torch.Tensor], tokens: int, seconds: float,
                steps: int) -> dict[str, float]:
        tok_s = tokens / max(seconds, 1e-9)
        row = {"loss": self.parallel.all_reduce_mean(loss).item(), "lr": self.optimizer.param_groups[0]["lr"],
               "tokens_per_sec": tok_s}
        if "grad_norm" in self.stats:
            row["grad_norm"] = self.stats["grad_norm"].item()
        if (u := mfu(tok_s, self.flops_per_token or 0.0, self.peak_flops)) is not None:
            row["mfu"] = u
        row.update({k: self.parallel.all_reduce_mean(v).item() for k, v in metrics.items()})
        self.logger.log("train", self.p["step"], 0, **row)
        return {**row, "dt": seconds / max(steps, 1)}

    def log_step(self, bar: Any, loss: torch.Tensor, metrics: dict[str, torch.Tensor], tokens: int, t_log: float,
                 steps: int) -> tuple[float, int, int]:
        """The train row of the steps since the last row (metrics.csv, the bar, the console line); returns the reset
        (time of this row, steps since it, tokens since it)."""
        cfg, p = self.cfg, self.p
        now = time.perf_counter()  # .item() in log_row waits for the GPU: time after it
        row = self.log_row(loss, metrics, tokens, now - t_log, steps)
        bar.set_postfix(loss=f"{row['loss']:.4f}", tok_s=f"{row['tokens_per_sec']:,.0f}")
        if cfg.print_every and p["step"] % cfg.print_every == 0:
            console(format_step(p["step"], {k: row[k] for k in ("loss", "lr", "dt", "tokens_per_sec", "mfu")
                                            if k in row}, self.total_steps))
        return now, 0, 0

    def fit(self) -> FitResult:
        from tqdm import tqdm

        cfg, p = self.cfg, self.p
        wrapped = self.parallel.wrap(self.model, self.optimizer)  # before resume: FSDP2 replaces the parameters
        self.resume()
        resumed_from = p["step"]
        self.fwd = torch.compile(wrapped) if cfg.compile else wrapped
        self.eval_fwd = self.fwd if wrapped is self.model else (torch.compile(self.model) if cfg.compile else self.model)
        bar = tqdm(total=self.total_steps, initial=p["step"], desc="train", leave=False,
                   disable=not (cfg.progress and progress_enabled()))
        self.model.train()
        try:
            with stop_at_step_boundary() as interrupt:
                if p["step"] == 0 and not p["evals"]:
                    self.evaluate()  # the untrained model (its loss should be about ln(vocab_size)), once per run
                t_log, since_log, tokens_since = time.perf_counter(), 0, 0
                while not self.budget_reached():
                    if cfg.stop_at and p["step"] >= cfg.stop_at:
                        self.save()
                        break
                    t0 = time.perf_counter()
                    self.in_step = True
                    loss, metrics, tokens = self.step()
                    self.in_step = False
                    if self.first_step_s is None:
                        self.first_step_s = time.perf_counter() - self.t_start
                    since_log, tokens_since = since_log + 1, tokens_since + tokens
                    bar.update(1)
                    logged = p["step"] % cfg.log_every == 0 or self.budget_reached(step_s=time.perf_counter() - t0)
                    if logged:
                        t_log, since_log, tokens_since = self.log_step(bar, loss, metrics, tokens_since, t_log,
                                                                       since_log)
                    p["last_step_s"] = time.perf_counter() - t0  # with the log row's wait for the device
                    p["train_time_s"] += p["last_step_s"]
                    # decided on the seconds just recorded, so a time budget is passed by less than the last step
                    done = self.budget_reached()
                    if done and not logged:  # the time ran out in the log row's wait: the last step gets its row
                        t_log, since_log, tokens_since = self.log_step(bar, loss, metrics, tokens_since, t_log,
                                                                       since_log)
                    if p["step"] % cfg.eval_every == 0 or done:
                        self.evaluate()
                        t_log, since_log, tokens_since = time.perf_counter(), 0, 0  # tokens/s leaves eval time out
                    elif cfg.ckpt_every and p["step"] % cfg.ckpt_every == 0:
                        self.save()
                    if interrupt["stop"]:
                        self.save()
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            if self.in_step:  # a hard interrupt (a second Ctrl-C) inside a step: the state may be half-updated
                console(f"interrupted inside step {p['step']}: not saved; the same command resumes from "
                        f"{self.path('last')}")
                raise
            if not interrupt["stop"]:  # between steps: the state is consistent
                self.save()
            if self.checkpointer is not None:
                self.checkpointer.wait()
            console(f"interrupted: saved step {p['step']} to {self.path('last')}; run the same command again to resume")
            raise
        finally:
            bar.close()
        if self.checkpointer is not None:
            self.checkpointer.wait()  # an asynchronous save still in flight is committed before the run returns
        self.logger.flush()
        self.parallel.barrier()  # no rank reads the checkpoints before the main rank has written them
        finished = self.budget_reached()
        if finished and cfg.budget != "max_steps":
            console(f"stopped by loop.{cfg.budget} at step {p['step']}: " + (
                f"{p['tokens']:,} of {cfg.max_tokens:,} tokens" if cfg.max_tokens
                else f"{p['train_time_s']:.1f} s of {cfg.max_seconds:g} s in training steps"))
        return FitResult(p["step"], finished, p["evals"], p["train_time_s"], p["tokens"],
                         resumed_from, p["best"], self.first_step_s,
                         {"last": self.path("last"), "best": self.path("best")},
                         cfg.budget if finished else "stop_at", p.get("last_step_s", 0.0))


def fit(model: nn.Module, task: Task, optimizer: torch.optim.Optimizer, schedule: ScheduleConfig, cfg: LoopConfig, *,
        checkpointer: Checkpointer | None = None, logger: MetricLogger | None = None, parallel: Parallel | None = None,
        on_eval: OnEval | None = None, flops_per_token: float | None = None, peak_flops: float | None = None,
        t_start: float | None = None, expect: dict[str, Any] | None = None) -> FitResult:
    """Train ``model`` on ``task`` until its budget, or resume the run in ``checkpointer``. The budget is
    ``cfg.max_steps`` optimizer steps, or ``cfg.max_tokens`` training tokens (the run stops before the step that would
    pass it), or ``cfg.max_seconds`` seconds inside training steps (it stops after the step that reaches it); with a
    token or time budget the schedule's decay ends at the budget (:func:`shared.train.optim.lr_at_progress`) and
    ``FitResult.stopped_by`` names it. Resuming keeps counting tokens and seconds from the checkpoint.

    Each step sets every param group's lr from its peak with :func:`shared.train.optim.lr_at`, draws
    ``cfg.grad_accum_steps`` micro-batches of ``cfg.micro_batch`` from the task for this rank, and runs
    :func:`shared.train.step.train_step` (accumulation, ``no_sync``, AMP, clipping, NaN check). Evals run at step 0
    (once, even across resumes), every ``cfg.eval_every`` steps and at the end, each followed by a checkpoint.

    Args:
        model: the plain module (its weights are what is saved); ``parallel`` wraps it for training.
        optimizer: built outside from the trainable parameters (:func:`shared.train.optim.build_optimizer`).
        checkpointer: where to save and resume (None: nothing is saved; no resume).
        logger: metric rows (default: the no-op :class:`shared.tracking.MetricLogger`).
        parallel: the strategy (default: one process).
        on_eval: called after each eval with ``(step, plain model, record)``; may add JSON-able keys to ``record``
            (e.g. a sample), which is checkpointed with the eval history.
        flops_per_token, peak_flops: for the MFU column (left out when either is None).
        t_start: ``time.perf_counter()`` at process start; evals record ``wall_s`` since then.
        expect: meta values a checkpoint must have to be resumed (e.g. ``{"tokenizer_sha256": ...}``).

    Raises:
        ConfigError: both a token and a time budget, or a token budget smaller than one step.
        NonFiniteLossError: the loss became NaN/inf (the message names the step and the last good checkpoint).
        CheckpointError: the checkpoint to resume belongs to another model/tokenizer or is incomplete.
        KeyboardInterrupt: Ctrl-C, after saving.
    """
    return _Loop(model, task, optimizer, schedule, cfg, checkpointer, logger or MetricLogger(), parallel or Parallel(),
                 on_eval, flops_per_token, peak_flops, time.perf_counter() if t_start is None else t_start,
                 expect).fit()
