"""The fine-tuning recipe: one run of any model on any task, from an empty (or half-done) run folder to its result.

The twin of :func:`shared.train.pretrain.pretrain` for a model that starts from weights (a pretrained Hugging Face
model, an exported GPT): open the run folder (locked, keyed by the config), seed, build the model with the caller's
factory, build AdamW from its trainable parameters, train with the step loop on the task (resuming when the folder
holds a checkpoint; a finished run is reused), and register the finished run once. Weeks 7-9 (SFT, LoRA, DPO) run
through it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from shared.device import resolve_device
from shared.dist import init_distributed
from shared.parallel import Parallel, build_parallel
from shared.profiling import peak_memory_gib, reset_peak_memory
from shared.repro import seed_everything
from shared.rundir import Run, finish_run, start_run
from shared.tasks.base import Task
from shared.tracking import FileLogger, console
from shared.train.config import LoopConfig, OptimConfig, ScheduleConfig
from shared.train.loop import FitResult, OnEval, fit
from shared.train.optim import build_optimizer

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class FinetuneRun:
    """A finished (or reused) fine-tuning run.

    Attributes:
        run: its folder (``run.dir``, ``run.run_id``).
        model: the trained model (the last step's weights), in train mode, on the run's device.
        result: the loop's result (evals, steps, tokens, ``stopped_by``, ``train_time_s`` in seconds).
        metrics: ``metrics.csv`` (train and eval rows).
        reused: True when the run had finished before and nothing was trained.
        tokens_per_sec: median training throughput of the logged steps (real tokens/s).
        peak_memory_gib: peak memory of this process (GiB; CPU: resident set, see
            :func:`shared.profiling.peak_memory_gib`).
        record: its results-registry line (None when reused: it was registered the first time).
    """

    run: Run
    model: nn.Module
    result: FitResult
    metrics: pd.DataFrame
    reused: bool
    tokens_per_sec: float
    peak_memory_gib: float
    record: dict[str, Any] | None


def finetune(week: str, name: str, profile: str, run_cfg: Any, build_model: Callable[[torch.device], nn.Module],
             task: Task, optim: OptimConfig, schedule: ScheduleConfig, loop: LoopConfig, *,
             checkpoint_meta: dict[str, Any] | None = None, expect: dict[str, Any] | None = None,
             on_eval: OnEval | None = None, on_start: Callable[[Run], None] | None = None,
             tensorboard: bool = True, parallel: Parallel | None = None) -> FinetuneRun:
    """Fine-tune (or resume, or reuse) the model ``build_model`` makes on ``task``.

    Args:
        run_cfg: the config that names the run folder (its hash: model, data version, hyper-parameters).
        build_model: ``device -> model`` (called after seeding; loads the starting weights).
        task: the objective (:class:`shared.tasks.base.Task`), e.g. :class:`shared.tasks.sft.SFTTask`.
        checkpoint_meta: more JSON-able facts for every checkpoint's ``meta.json`` (base model, data hash).
        expect: facts a resumed checkpoint must match (e.g. ``{"tokenizer_sha256": ...}``).
        on_eval, on_start, tensorboard, parallel: as for :func:`shared.train.pretrain.pretrain`.

    Raises:
        RunLockedError: the same run is running in another process.
        NonFiniteLossError, CheckpointError: see :func:`shared.train.loop.fit`.
    """
    parallel = parallel or build_parallel(loop.parallel, init_distributed(device=loop.device))
    device = parallel.info.device if parallel.world_size > 1 else resolve_device(loop.device)
    with start_run(week, name, profile, run_cfg) as run:
        reused = run.finished
        if on_start is not None:
            on_start(run)
        seed_everything(loop.seed)
        model = build_model(device).to(device)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        console(f"{name}: {trainable:,} trainable of {sum(p.numel() for p in model.parameters()):,} parameters, "
                f"device {device} -> {run.dir}")
        optimizer = build_optimizer(model, optim)
        logger = FileLogger(run.dir, run.run_id, loop.seed, tensorboard=tensorboard)
        meta = {"run_id": run.run_id, "git_commit": run.env.get("git_commit"), "world_size": parallel.world_size,
                **(checkpoint_meta or {})}
        checkpointer = parallel.checkpointer(run.dir / "checkpoints", loop.keep_last_k, meta)
        reset_peak_memory(device)
        t0 = time.perf_counter()
        result = fit(model, task, optimizer, schedule, loop, checkpointer=checkpointer, logger=logger,
                     parallel=parallel, on_eval=on_eval, expect=expect)
        logger.close()
        record = None
        if result.finished and parallel.is_main and not reused:
            final = {k: v for k, v in result.evals[-1].items() if k not in ("step", "tokens", "train_time_s", "wall_s")}
            record = finish_run(run, loop.seed, final, result.train_time_s)
        console(f"{'reused' if reused else 'trained'} {name} to step {result.step} in {time.perf_counter() - t0:.1f} s: "
                + ", ".join(f"{k} {v:.4f}" for k, v in result.evals[-1].items() if k.endswith("loss")))
        import pandas as pd

        metrics = pd.read_csv(run.dir / "metrics.csv")
        rows = metrics[metrics.phase == "train"]
        tok_s = float(rows.tokens_per_sec.median()) if len(rows) else 0.0
        return FinetuneRun(run, model, result, metrics, reused, tok_s, peak_memory_gib(device), record)
