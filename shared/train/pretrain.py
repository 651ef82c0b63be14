"""The pre-training recipe: one GPT run on a token stream, from an empty (or half-done) run folder to its result.

Weeks 4, 5 and 6 train every language model through :func:`pretrain`: open the run folder (locked, keyed by the
config), seed and build the GPT, build the optimizer from its param groups, train it with the step loop on an
:class:`shared.tasks.lm.LMTask` (resuming when the folder holds a checkpoint), and register the finished run once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from shared.config import ConfigError
from shared.data.sampling import check_stream_length
from shared.device import resolve_device
from shared.dist import init_distributed
from shared.flops import mfu_peak
from shared.models.gpt import GPT, GPTConfig
from shared.parallel import Parallel, build_parallel
from shared.profiling import peak_memory_gib, reset_peak_memory
from shared.repro import seed_everything
from shared.rundir import Run, finish_run, start_run
from shared.tasks.lm import LMTask, LMTaskConfig
from shared.tracking import FileLogger, console
from shared.train.config import LoopConfig, OptimConfig, ScheduleConfig
from shared.train.loop import FitResult, OnEval, fit
from shared.train.optim import build_optimizer

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class LMSetup:
    """Everything that defines one pre-training run (the model config has the tokenizer's vocabulary size)."""

    model: GPTConfig
    optim: OptimConfig
    schedule: ScheduleConfig
    loop: LoopConfig
    task: LMTaskConfig


@dataclass
class LMRun:
    """A pre-training run that reached its end (or ``loop.stop_at``), and what logs need from it."""

    run: Run
    model: GPT  # the final weights, on the run's device
    fit: FitResult
    metrics: pd.DataFrame  # the run's metrics.csv
    skipped: bool  # the run was already complete (nothing trained in this process)
    tokens_per_sec: float  # median of the logged training rows
    mfu: float | None  # median of the logged rows (None without a peak)
    mfu_source: str  # what the MFU is measured against
    peak_mem_gib: float  # peak memory of this process while it trained (see shared.profiling.peak_memory_gib)
    flops_per_token: float  # training FLOPs per token (6N + attention)
    record: dict[str, Any] | None  # the registry record (None until the run finishes)


def device_memory_bytes(device: torch.device) -> int | None:
    """Total memory of ``device`` in bytes (a GPU's, or the machine's RAM for the CPU); None when unknown."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, OSError, ValueError):
            return None
    return None


def training_bytes(setup: LMSetup) -> tuple[int, int]:
    """A lower bound on one rank's training memory: ``(weights + gradients + optimizer state, attention
    matrices)`` in bytes. The model is built on the meta device (nothing allocated) to count its parameters; the
    hand-written attention keeps each layer's (micro_batch, n_head, T, T) probabilities for the backward pass
    (``attn_backend=torch`` keeps no T x T matrix)."""
    with torch.device("meta"):
        n_params = sum(p.numel() for p in GPT(setup.model).parameters())
    state = 4 + 4 + (8 if setup.optim.name == "adamw" else 4)  # fp32 weight, gradient, moments (or momentum)
    m, t = setup.model, setup.model.block_size
    elem = 2 if setup.loop.precision in ("bf16", "fp16") else 4
    attention = m.n_layer * setup.loop.micro_batch * m.n_head * t * t * elem if m.attn_backend == "manual" else 0
    return n_params * state, attention


def check_fits(setup: LMSetup, device: torch.device) -> None:
    """Refuse, before anything is allocated, a run whose lower-bound memory (:func:`training_bytes`) exceeds the
    device's (a context or a batch that would ask torch for terabytes).

    Raises:
        ConfigError: naming the sizes that set the bound and the fix.
    """
    have = device_memory_bytes(device)
    weights, attention = training_bytes(setup)
    if have is None or weights + attention <= have:
        return
    m, gib = setup.model, 2**30
    raise ConfigError(
        f"this run needs at least {(weights + attention) / gib:,.1f} GiB on {device}, which has {have / gib:,.1f} GiB: "
        f"{weights / gib:,.1f} GiB of weights, gradients and optimizer state (model.n_layer={m.n_layer}, "
        f"model.n_embd={m.n_embd}, model.vocab_size={m.vocab_size}) and {attention / gib:,.1f} GiB of attention "
        f"matrices (model.block_size={m.block_size} squared x loop.micro_batch={setup.loop.micro_batch} x "
        f"model.n_head={m.n_head} x model.n_layer={m.n_layer}). Fix: lower model.block_size or loop.micro_batch "
        "(raise loop.grad_accum_steps to keep the global batch), use model.attn_backend=torch (no T x T matrix), "
        "or make the model smaller.")


def pretrain(week: str, name: str, profile: str, run_cfg: Any, setup: LMSetup, train: torch.Tensor | np.ndarray,
             val: torch.Tensor | np.ndarray, *, tokenizer_sha256: str | None = None, on_eval: OnEval | None = None,
             t_start: float | None = None, tensorboard: bool = True, parallel: Parallel | None = None,
             result_metrics: Callable[[GPT, FitResult], dict[str, Any]] | None = None,
             on_start: Callable[[Run], None] | None = None, checkpoint_meta: dict[str, Any] | None = None) -> LMRun:
    """Train (or resume, or reuse) the GPT of ``setup`` on the token streams ``train`` / ``val``.

    Args:
        run_cfg: the config that names the run folder (its hash); it should hold ``setup`` with
            :func:`shared.train.config.run_identity` applied to the loop.
        tokenizer_sha256: recorded in every checkpoint; resuming with another tokenizer is refused.
        on_eval, t_start: see :func:`shared.train.loop.fit`.
        parallel: the strategy (default: ``loop.parallel`` over :func:`shared.dist.init_distributed`, so a run under
            torchrun is DDP and a plain process is one process).
        result_metrics: the registry metrics of a finished run (default: the last eval's).
        on_start: called with the open run before training (e.g. to save the tokenizer into its folder).
        checkpoint_meta: more JSON-able facts for every checkpoint's ``meta.json`` (e.g. the tokenizer's path).

    Raises:
        TooFewTokensError: a split is shorter than one window of ``model.block_size + 1`` tokens.
        ConfigError: the run cannot fit the device's memory (:func:`check_fits`).
        RunLockedError: the same run is running in another process.
        NonFiniteLossError, CheckpointError: see :func:`shared.train.loop.fit`.
    """
    loop = setup.loop
    check_stream_length(len(train), setup.model.block_size, "the training split")
    check_stream_length(len(val), setup.model.block_size, "the validation split")
    parallel = parallel or build_parallel(loop.parallel, init_distributed(device=loop.device))
    device = parallel.info.device if parallel.world_size > 1 else resolve_device(loop.device)  # a rank's own GPU
    check_fits(setup, device)
    with start_run(week, name, profile, run_cfg) as run:
        skipped = run.finished
        if on_start is not None:
            on_start(run)
        seed_everything(loop.seed)
        model = GPT(setup.model).to(device)
        console(f"GPT: {model.num_params():,} non-embedding parameters ({model.num_params(False):,} in all), vocab "
                f"{setup.model.vocab_size}, block {setup.model.block_size}, device {device} -> {run.dir}")
        optimizer = build_optimizer(model, setup.optim)
        task = LMTask(train, val, setup.model.block_size, loop.seed, setup.task.eval_iters, loop.micro_batch)
        peak, source = mfu_peak(device, loop.precision)
        logger = FileLogger(run.dir, run.run_id, loop.seed, tensorboard=tensorboard)
        meta = {"run_id": run.run_id, "git_commit": run.env.get("git_commit"), "tokenizer_sha256": tokenizer_sha256,
                "world_size": parallel.world_size, **(checkpoint_meta or {})}
        checkpointer = parallel.checkpointer(run.dir / "checkpoints", loop.keep_last_k, meta)
        reset_peak_memory(device)
        t0 = time.perf_counter()
        result = fit(model, task, optimizer, setup.schedule, loop, checkpointer=checkpointer, logger=logger,
                     parallel=parallel, on_eval=on_eval, flops_per_token=model.flops_per_token(), peak_flops=peak,
                     t_start=t_start, expect={"tokenizer_sha256": tokenizer_sha256} if tokenizer_sha256 else None)
        logger.close()
        record = None
        if result.finished and parallel.is_main:  # registered once: a reused run returns its recorded result
            results = {} if skipped else result_metrics(model, result) if result_metrics else {
                k: v for k, v in result.evals[-1].items() if k not in ("step", "tokens", "train_time_s", "wall_s")}
            record = finish_run(run, loop.seed, results, result.train_time_s)
        final = result.evals[-1]
        console(f"{'reused' if skipped else 'trained'} {name} to step {result.step} in {time.perf_counter() - t0:.1f} s: "
                + ", ".join(f"{k} {v:.4f}" for k, v in final.items() if k.endswith("loss")))
        import pandas as pd  # ~0.5 s: after training, not before its first step

        metrics = pd.read_csv(run.dir / "metrics.csv")
        rows = metrics[metrics.phase == "train"]
        mfu_median = float(rows.mfu.median()) if "mfu" in rows and len(rows) else None
        tok_s = float(rows.tokens_per_sec.median()) if len(rows) else 0.0
        return LMRun(run, model, result, metrics, skipped, tok_s, mfu_median, source, peak_memory_gib(device),
                     model.flops_per_token(), record)
