"""Days 36 and 39-40: the budget demo, A vs B at one token budget, and the IsoFLOP sweep.

Every run is a :func:`week06_budget.runs.budget_run`: cached by config hash (a rerun reuses finished runs),
estimated before it starts, stopped by its budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from shared.models.generation import SampleConfig, sample_text
from shared.models.gpt import GPT, GPTConfig
from shared.scaling import FitError, ScalingFit, fit_scaling
from shared.stats import WelchTest, welch
from shared.train.config import LoopConfig
from week06_budget.config import Week06Config
from week06_budget.data import Versions
from week06_budget.runs import BudgetRun, budget_run


def _loop(cfg: Week06Config, seed: int, **budget) -> LoopConfig:
    return replace(cfg.loop, seed=seed, **{"max_tokens": 0, "max_seconds": 0.0, **budget})


def _model(cfg: Week06Config, vocab: int, **shape) -> GPTConfig:
    return replace(cfg.model, vocab_size=vocab, **shape)


@dataclass
class BudgetDemo:
    """The A/B model on B under a token budget and under a wall-clock budget."""

    by_tokens: BudgetRun
    by_seconds: BudgetRun


def budget_demo(cfg: Week06Config, profile: str, v: Versions, vocab: int) -> BudgetDemo:
    sha = v.tokenizer.sha256
    common = (v.b, sha, _model(cfg, vocab), cfg.optim, cfg.schedule)
    return BudgetDemo(
        budget_run("demo-tokens", profile, *common, _loop(cfg, 0, max_tokens=cfg.demo.max_tokens), cfg.task,
                   probe_s=cfg.check.probe_s),
        budget_run("demo-seconds", profile, *common, _loop(cfg, 0, max_seconds=cfg.demo.max_seconds), cfg.task,
                   probe_s=cfg.check.probe_s))


@dataclass
class ABResult:
    """A and B at one token budget over the same seeds."""

    runs: dict[str, list[BudgetRun]]  # "A" / "B" -> one per seed
    loss: WelchTest  # val loss, A − B
    bpb: WelchTest  # bits per byte, A − B
    samples: dict[str, list[str]]  # "A" / "B" -> samples of the seed-0 model


def ab_experiment(cfg: Week06Config, profile: str, v: Versions, vocab: int) -> ABResult:
    sha, out = v.tokenizer.sha256, {}
    samples: dict[str, list[str]] = {}
    for name, version in (("A", v.a), ("B", v.b)):
        out[name] = []
        for seed in cfg.ab.seeds:
            run = budget_run(f"ab-{name}", profile, version, sha, _model(cfg, vocab), cfg.optim, cfg.schedule,
                             _loop(cfg, seed, max_tokens=cfg.ab.max_tokens), cfg.task, keep_model=seed == cfg.ab.seeds[0],
                             probe_s=cfg.check.probe_s)
            out[name].append(run)
        samples[name] = _samples(out[name][0].model, v, cfg)
        out[name][0].model = None
    return ABResult(out, welch([r.val_loss for r in out["A"]], [r.val_loss for r in out["B"]]),
                    welch([r.bits_per_byte for r in out["A"]], [r.bits_per_byte for r in out["B"]]), samples)


def _samples(model: GPT, v: Versions, cfg: Week06Config) -> list[str]:
    return [sample_text(model, v.tokenizer, SampleConfig("", cfg.ab.sample_tokens, cfg.ab.temperature, 50, seed))
            for seed in range(cfg.ab.samples)]


@dataclass
class IsoFLOP:
    """Every (budget, size) run and the fit through them (None when it could not be fitted: ``fit_error`` says)."""

    points: list[tuple[float, str, BudgetRun]]  # (budget C, size name, run)
    skipped: list[tuple[float, str, int]]  # (budget, size, steps): too few steps to count
    fit: ScalingFit | None
    fit_error: str


def size_name(n_layer: int, n_embd: int) -> str:
    return f"L{n_layer}xC{n_embd}"


def isoflop_sweep(cfg: Week06Config, profile: str, v: Versions, vocab: int) -> IsoFLOP:
    """Each size at each budget C, trained on D = C / (its FLOPs per token) tokens of B (rounded down to whole
    steps), with a cosine over its own steps and ``isoflop.warmup_frac`` of them as warm-up."""
    iso, sha = cfg.isoflop, v.tokenizer.sha256
    runs, skipped, points = [], [], {}  # runs: (C, size, run); points: C -> [(N', loss)]
    for c in iso.budgets:
        for s in iso.sizes:
            model = _model(cfg, vocab, n_layer=s.n_layer, n_head=s.n_head, n_embd=s.n_embd, block_size=iso.block_size)
            per_token = _flops_per_token(model)
            tokens_per_step = iso.micro_batch * iso.block_size
            steps = int(c / per_token) // tokens_per_step
            if steps < iso.min_steps:
                skipped.append((c, size_name(s.n_layer, s.n_embd), steps))
                continue
            loop = replace(cfg.loop, seed=iso.seed, micro_batch=iso.micro_batch, max_tokens=steps * tokens_per_step,
                           max_seconds=0.0, eval_every=max(1, steps // 4))
            sched = replace(cfg.schedule, warmup_steps=max(1, round(iso.warmup_frac * steps)), min_lr=iso.lr / 10)
            optim = replace(cfg.optim, lr=iso.lr)
            name = size_name(s.n_layer, s.n_embd)
            run = budget_run(f"iso-{c:.4g}-{name}", profile, v.b, sha, model, optim, sched, loop, cfg.task,
                             probe_s=cfg.check.probe_s)
            runs.append((c, name, run))
            points.setdefault(c, []).append((float(run.n_params_matmul), run.val_loss))
    try:
        fit, err = fit_scaling(points, n_boot=iso.bootstrap, level=iso.level, seed=iso.seed), ""
    except FitError as e:
        fit, err = None, str(e)
    return IsoFLOP(runs, skipped, fit, err)


def iso_runs(iso: IsoFLOP) -> list[BudgetRun]:
    return [r for _, _, r in iso.points]


def _flops_per_token(model: GPTConfig) -> float:
    import torch

    with torch.device("meta"):
        return GPT(model).flops_per_token()


def optimum_at(fit: ScalingFit, budget: float) -> tuple[float, float, float]:
    """(N_opt, D_opt, predicted loss) at ``budget`` from the fitted power laws."""
    return fit.n_opt(budget), fit.d_opt(budget), fit.loss(budget)


def spread(values: list[float]) -> float:
    return max(values) - min(values) if values else math.nan
