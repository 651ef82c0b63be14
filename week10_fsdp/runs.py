"""The week's training runs: one task, one strategy, through the shared recipes (``pretrain`` for the LM,
``finetune`` for SFT), so a run folder, its checkpoints (safetensors for DDP, DCP shards for FSDP2) and its
metrics.csv come from the same code as every other week's. Each run is keyed by its config, strategy included:
``make week10`` again reuses finished runs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import pandas as pd
from torch import nn

from shared.data.lm import LMDataConfig
from shared.dist import DistInfo
from shared.models.gpt import GPTConfig
from shared.parallel import FSDPConfig, Parallel, build_parallel
from shared.tasks.lm import LMTaskConfig
from shared.tasks.sft import SFTTaskConfig
from shared.train.config import LoopConfig, OptimConfig, ScheduleConfig, run_identity
from shared.train.finetune import finetune
from shared.train.pretrain import LMSetup, pretrain
from week10_fsdp.config import Week10Config
from week10_fsdp.data import SFTData, build_sft_model

WEEK = "week10"
EVAL_ITERS = 4  # eval batches per estimate (the resharded checkpoint is scored on the same ones)


@dataclass
class StrategyRun:
    """One finished run: its per-step train losses (the mean over ranks), its evals and its folder."""

    name: str
    strategy: str
    losses: list[float]  # train loss of steps 1..N (metrics.csv, log_every=1)
    evals: list[dict[str, Any]]
    run_dir: str
    run_id: str
    reused: bool
    tokens_per_sec: float
    model: nn.Module  # the trained model (sharded for FSDP2)

    def row(self) -> dict[str, Any]:
        return {"name": self.name, "strategy": self.strategy, "steps": len(self.losses),
                "first_loss": self.losses[0], "last_loss": self.losses[-1], "run_id": self.run_id,
                "reused": self.reused}


@dataclass
class LMRunKey:
    """What names an LM run's folder (its hash): the setup, the data, the strategy and its options, the ranks."""

    setup: LMSetup
    data: LMDataConfig
    strategy: str
    fsdp: FSDPConfig
    world_size: int
    rerun: int = 0  # > 0: a second run of the same config in its own folder (the reproducibility check)


@dataclass
class SFTRunKey:
    """What names an SFT run's folder (its hash)."""

    base: str
    base_layers: int
    task: SFTTaskConfig
    data: dict[str, str]
    optim: OptimConfig
    schedule: ScheduleConfig
    loop: LoopConfig
    strategy: str
    fsdp: FSDPConfig
    world_size: int


def strategy(cfg: Week10Config, info: DistInfo, name: str) -> Parallel:
    """``ddp``, ``fsdp2`` (the config's FSDP options) or ``fsdp2_ac`` (the same with activation checkpointing)."""
    if name == "fsdp2_ac":
        return build_parallel("fsdp2", info, replace(cfg.fsdp, activation_checkpointing=True))
    return build_parallel(name, info, cfg.fsdp if name == "fsdp2" else None)


def _train_losses(metrics: pd.DataFrame) -> list[float]:
    rows = metrics[metrics.phase == "train"].sort_values("step")
    return [float(v) for v in rows.loss]


def lm_setup(cfg: Week10Config, vocab_size: int, micro_batch: int, accum: int, par: str) -> LMSetup:
    """The week-5 GPT (pre-LN, GELU, learned positions, tied head) at this week's shape, for ``steps`` steps."""
    model = GPTConfig(vocab_size=vocab_size, **asdict(cfg.lm))
    loop = replace(cfg.loop, max_steps=cfg.parity.steps, micro_batch=micro_batch, grad_accum_steps=accum,
                   parallel="fsdp2" if par.startswith("fsdp2") else par)
    return LMSetup(model, cfg.optim, cfg.schedule, loop, LMTaskConfig(eval_iters=EVAL_ITERS))


def lm_run(cfg: Week10Config, profile: str, info: DistInfo, data: Any, par: str, name: str, accum: int = 1,
           rerun: int = 0) -> StrategyRun:
    """Pre-train the week-5 GPT under ``par`` on the LM stream (``accum`` micro-batches per step, each
    ``parity.micro_batch // accum`` windows: the same global batch for every ``accum``)."""
    micro = max(cfg.parity.micro_batch // accum, 1)
    setup = lm_setup(cfg, data.vocab_size, micro, accum, par)
    parallel = strategy(cfg, info, par)
    run_cfg = LMRunKey(replace(setup, loop=run_identity(setup.loop)), cfg.lm_data, par, cfg.fsdp, info.world_size,
                       rerun)
    r = pretrain(WEEK, name, profile, run_cfg, setup, data.train, data.val, tokenizer_sha256=data.tokenizer.tokenizer.sha256,
                 tensorboard=False, parallel=parallel)
    return StrategyRun(name, par, _train_losses(r.metrics), r.fit.evals, str(r.run.dir), r.run.run_id, r.skipped,
                       r.tokens_per_sec, r.model)


def sft_run(cfg: Week10Config, profile: str, info: DistInfo, sft: SFTData, par: str, name: str,
            accum: int = 1) -> StrategyRun:
    """Fine-tune the SFT base under ``par`` on the week-7 task (``accum`` micro-batches per step)."""
    micro = max(cfg.parity.sft_micro_batch // accum, 1)
    loop = replace(cfg.loop, max_steps=cfg.parity.steps, micro_batch=micro, grad_accum_steps=accum,
                               parallel="fsdp2" if par.startswith("fsdp2") else par, best_metric="val_loss")
    optim = replace(cfg.optim, lr=cfg.sft.lr)
    schedule = replace(cfg.schedule, min_lr=cfg.sft.lr / 10)  # the LM's floor may sit above a fine-tuning lr
    run_cfg = SFTRunKey(sft.base_dir.name, cfg.sft.base.n_layer, cfg.sft.task, sft.hashes, optim, schedule,
                        run_identity(loop), par, cfg.fsdp, info.world_size)
    r = finetune(WEEK, name, profile, run_cfg, build_sft_model(sft.base_dir, cfg.sft.base.n_layer), sft.task, optim,
                 schedule, loop, checkpoint_meta={"base_model": str(sft.base_dir)}, tensorboard=False,
                 parallel=strategy(cfg, info, par))
    return StrategyRun(name, par, _train_losses(r.metrics), r.result.evals, str(r.run.dir), r.run.run_id, r.reused,
                       r.tokens_per_sec, r.model)


def max_gap(a: list[float], b: list[float]) -> float:
    """max |a_i - b_i| over the steps both runs have (inf when their lengths differ: a run stopped early)."""
    if len(a) != len(b) or not a:
        return float("inf")
    return max(abs(x - y) for x, y in zip(a, b, strict=True))
