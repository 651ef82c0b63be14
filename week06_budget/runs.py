"""One budgeted training run on a data version: pre-flight estimate, the run on the shared loop, the result.

Every run's config names its data version's manifest (path and sha256), so the run folder's hash, the registry
record and the memo all trace back to the exact packed bytes. The pre-flight estimate is printed and saved in the
run folder before training (a reused run shows the estimate it was started with).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any

from shared.atomic import atomic_write_text
from shared.data.fetch import sha256sum
from shared.data.versions import DataVersion
from shared.models.gpt import GPT, GPTConfig
from shared.paths import runs_root
from shared.profiling import current_memory_gib, peak_memory_gib
from shared.rundir import Run, run_path
from shared.tasks.lm import LMTaskConfig
from shared.tracking import console
from shared.train.config import LoopConfig, OptimConfig, ScheduleConfig, run_identity
from shared.train.loop import FitResult
from shared.train.perplexity import bits_per_byte, stream_loss
from shared.train.preflight import Preflight, compare, preflight
from shared.train.pretrain import LMSetup, pretrain
from week06_budget.data import WEEK


@dataclass
class DataRef:
    """The data version a run trained on, as its config records it."""

    version: str
    manifest: str  # path below the runs root
    manifest_sha256: str


@dataclass
class TrainRunConfig:
    """What identifies a run: its data version and every training setting (``run_identity`` of the loop)."""

    data: DataRef
    model: GPTConfig
    optim: OptimConfig
    schedule: ScheduleConfig
    loop: LoopConfig
    task: LMTaskConfig


@dataclass
class BudgetRun:
    """A finished budgeted run and what the log and the memo need from it."""

    name: str
    version: str
    seed: int
    run_id: str
    config_hash: str
    manifest: str
    budget: str  # loop.max_tokens / max_seconds / max_steps
    budget_value: float
    stopped_by: str
    steps: int
    tokens: int
    train_time_s: float
    val_loss: float  # nats/token on the whole common val set
    bits_per_byte: float
    n_params: int  # every parameter
    n_params_matmul: int  # N' of the FLOPs count (matmul weights, the LM head included)
    flops_per_token: float
    flops: float  # flops_per_token x tokens
    estimate: dict[str, Any]  # Preflight.to_dict()
    actual: dict[str, Any]  # shared.train.preflight.compare
    tokens_per_step: int
    last_step_s: float  # the last step's seconds (a time budget is passed by less than this)
    model: GPT | None = None  # the trained model (None when the caller does not need it)


def data_ref(version: DataVersion) -> DataRef:
    return DataRef(version.name, str(version.manifest_path.relative_to(runs_root())), sha256sum(version.manifest_path))


def matmul_params(model: GPT) -> int:
    """N' of :meth:`GPT.flops_per_token`: the weights of every ``nn.Linear`` (the tied LM head once)."""
    from torch import nn

    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


def budget_run(name: str, profile: str, version: DataVersion, tokenizer_sha256: str, model: GPTConfig,
               optim: OptimConfig, schedule: ScheduleConfig, loop: LoopConfig, task: LMTaskConfig,
               keep_model: bool = False, probe_s: float = 1.0) -> BudgetRun:
    """Estimate, then train (or reuse) one run of ``loop``'s budget on ``version``; evaluate on its whole val set.

    Raises:
        ConfigError: a budget smaller than one step, or two budgets (see :func:`shared.train.loop.fit`).
        TokenFileError: the version's packed files do not verify.
    """
    setup = LMSetup(model, optim, schedule, loop, task)
    ref = data_ref(version)
    run_cfg = TrainRunConfig(ref, model, optim, schedule, run_identity(loop), task)
    folder = run_path(WEEK, name, profile, run_cfg)
    train, val = version.stream("train", tokenizer_sha256), version.stream("val", tokenizer_sha256)
    val_counts = version.manifest["counts"]["val"]
    estimate_path = folder / "preflight.json"
    tokens_per_step = loop.micro_batch * loop.grad_accum_steps * model.block_size
    loop.check_token_budget(tokens_per_step)
    if estimate_path.is_file():
        estimate = Preflight(**json.loads(estimate_path.read_text()))
    else:
        tokens = ((loop.max_tokens // tokens_per_step) * tokens_per_step if loop.max_tokens
                  else loop.max_steps * tokens_per_step)
        estimate = preflight(model, optim, loop, tokens, train, device=loop.device, probe_s=probe_s)
        if loop.max_seconds:  # the tokens a wall-clock budget buys at the probed speed
            bought = int(loop.max_seconds * estimate.probe_tokens_per_sec)
            estimate = replace(estimate, tokens=bought, flops=estimate.flops_per_token * bought,
                               flops_6nd=6.0 * estimate.n_params_non_embedding * bought, seconds=loop.max_seconds)
    console(f"{name}: {estimate.describe()}")
    memory: dict[str, float | None] = {}

    def on_start(run: Run) -> None:
        atomic_write_text(run.dir / "preflight.json", json.dumps(estimate.to_dict(), indent=2) + "\n")
        memory["before"] = current_memory_gib(_device(loop))

    def final(m: GPT, fit: FitResult) -> dict[str, Any]:
        peak = peak_memory_gib(_device(loop))
        ev = stream_loss(m, val, model.block_size, 16, loop.precision)
        before = memory.get("before")
        return {"val_loss": ev["loss"], "bits_per_byte": bits_per_byte(ev["loss"], ev["tokens"], val_bytes(ev)),
                "stopped_by": fit.stopped_by, "steps": fit.step, "tokens": fit.tokens, "last_step_s": fit.last_step_s,
                "train_memory_gib": None if before is None else peak - before}

    def val_bytes(ev: dict[str, float]) -> float:
        # stream_loss predicts every token but the first of the stream: scale the val text's bytes to that share
        return val_counts["bytes"] * ev["tokens"] / max(1, val_counts["tokens"] - 1)

    lm = pretrain(WEEK, name, profile, run_cfg, setup, train, val, tokenizer_sha256=tokenizer_sha256, tensorboard=False,
                  result_metrics=final, on_start=on_start, checkpoint_meta={"manifest": ref.manifest})
    if lm.record is None:
        raise RuntimeError(f"{name} stopped before its budget (loop.stop_at?): run the week again to finish it")
    r = lm.record["metrics"]
    budget = loop.budget
    actual = compare(estimate, lm.record["train_time_s"], r["tokens"], r.get("train_memory_gib"))
    return BudgetRun(name, version.name, loop.seed, lm.record["run_id"], lm.record["config_hash"], ref.manifest,
                     budget, float(getattr(loop, budget)), r["stopped_by"], r["steps"], r["tokens"],
                     lm.record["train_time_s"], r["val_loss"], r["bits_per_byte"], lm.model.num_params(False),
                     matmul_params(lm.model), lm.model.flops_per_token(), lm.model.flops_per_token() * r["tokens"],
                     estimate.to_dict(), actual, tokens_per_step, r["last_step_s"], lm.model if keep_model else None)


def _device(loop: LoopConfig):
    from shared.device import resolve_device

    return resolve_device(loop.device)


def as_row(run: BudgetRun) -> dict[str, Any]:
    """The run as a flat table row (no model)."""
    row = {k: v for k, v in asdict(replace(run, model=None)).items() if k not in ("estimate", "actual", "model")}
    return {**row, "estimated_s": run.actual["seconds"], "time_ratio": run.actual["time_ratio"],
            "estimated_gib": run.actual["memory_gib"], "memory_ratio": run.actual["memory_ratio"]}
