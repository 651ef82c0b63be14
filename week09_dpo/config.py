"""Week 9's config: the starting model (week 8's export), the preference data, the DPO objective, the adapter, the
runs (main, beta sweep, IPO, the failure demonstration and its mitigation), TRL's reference run, the week-7 harness
and the checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shared.cli import config_files
from shared.config import at_least, in_range, load_config, positive
from shared.evals.instruct import HarnessConfig
from shared.nn.lora import LLAMA_TARGETS
from shared.tasks.dpo import DPOTaskConfig
from shared.train.config import LoopConfig, OptimConfig, ScheduleConfig

WEEK_DIR = Path(__file__).resolve().parent


@dataclass
class ModelsConfig:
    """Where week 9 starts: the SFT model it aligns (a folder under models/, e.g. week 8's merged export)."""

    start: str = "week08/sft-lora"  # under models/ ($AIFS_MODELS_ROOT); `make week08` writes it


@dataclass
class DataConfig:
    """The preference pairs: sources, the fixed split by prompt, the periodic-eval subset, the generation prompts."""

    sources: list[str] = field(default_factory=lambda: ["llms_from_scratch_ch07", "hh_rlhf"])
    template: str = "alpaca"  # how ch07's instructions become prompts (week 7's SFT format); HH prompts are dialogues
    heldout_per_source: int = at_least(1, 64)  # held-out pairs per source (preference accuracy)
    eval_per_source: int = at_least(1, 8)  # the first k held-out pairs per source: every periodic eval
    gen_per_source: int = at_least(0, 2)  # held-out prompts per source generated at every eval (length, repetition)
    gen_max_new_tokens: int = at_least(1, 48)
    deflect_prompts: int = at_least(0, 16)  # held-out HH prompts answered by SFT and DPO (deflection rate)
    deflect_max_new_tokens: int = at_least(1, 64)
    samples: int = at_least(0, 4)  # eval-set instructions answered by SFT and DPO side by side in the log
    train_limit: int = at_least(0, 0)  # only the first N training pairs after the split (0 = all; smoke)


@dataclass
class AdapterConfig:
    """The LoRA adapters DPO trains (the reference is the model with them switched off)."""

    r: int = at_least(1, 16)
    alpha: float = positive(32.0)
    target_modules: list[str] = field(default_factory=lambda: list(LLAMA_TARGETS))


@dataclass
class RunConfig:
    """Budgets: the main run, and the short runs (beta sweep, IPO, failure demonstration, rerun)."""

    max_steps: int = at_least(1, 30)
    short_steps: int = at_least(1, 10)
    betas: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.5])
    variant: str = "ipo"  # the beyond-DPO loss on the same harness
    variant_beta: float = positive(0.1)
    bad_lr: float = positive(5e-3)  # the deliberately bad setting: 10x the lr ...
    bad_beta: float = positive(0.05)  # ... at a small beta
    fix_sft_weight: float = in_range(0, 100, 1.0)  # the mitigation: an SFT term on chosen at the same bad setting
    fix_lr: float = positive(5e-4)  # a second mitigation: the bad beta at the normal lr


@dataclass
class TRLConfig:
    """TRL's ``DPOTrainer`` as the reference: one batch, the first steps of the main run, the step time."""

    enabled: bool = True
    steps: int = at_least(1, 8)  # TRL trains the main run's first N steps (same batches, same schedule)
    loss_atol: float = positive(1e-5)  # |hand - TRL| loss on one fixed batch (fp32)
    curve_atol: float = positive(2e-3)  # |hand - TRL| train loss at every compared step
    bench_steps: int = at_least(1, 2)
    speed_slack: float = positive(0.15)  # the hand step may be at most this much slower than TRL's


@dataclass
class CheckConfig:
    """Thresholds of the week's checks and the failure-mode detectors."""

    time_budget_s: float = positive(2700.0)
    kl_bound: float = positive(0.5)  # nats/token: a stable run's final val KL to the reference stays below this
    displacement_nats: float = positive(1.0)  # chosen log-probs falling by more than this while the margin grows
    verbosity_ratio: float = positive(1.5)  # generated length grows by more than this factor
    repetition_rise: float = positive(0.15)  # repeated-trigram share rises by more than this
    kl_explode: float = positive(1.0)  # nats/token
    alpha: float = in_range(0, 1, 0.05)  # paired tests: preference accuracy, harness drops (Holm)
    judge_eval: bool = True  # False (smoke): a random tiny model's numbers are noise
    judge_speed: bool = True


@dataclass
class EvalSetConfig:
    """Week 7's frozen eval set, read by path (its sha256 pinned, so weeks 7-9 score the same items)."""

    path: str = "week07_sft/data/eval_set.jsonl"
    sha256: str = ""
    limit: int = at_least(0, 0)


@dataclass
class Week09Config:
    """Top level of ``configs/week09.yaml``."""

    models: ModelsConfig = field(default_factory=ModelsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    dpo: DPOTaskConfig = field(default_factory=DPOTaskConfig)
    lora: AdapterConfig = field(default_factory=AdapterConfig)
    run: RunConfig = field(default_factory=RunConfig)
    trl: TRLConfig = field(default_factory=TRLConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    harness: HarnessConfig = field(default_factory=HarnessConfig)
    eval_set: EvalSetConfig = field(default_factory=EvalSetConfig)
    check: CheckConfig = field(default_factory=CheckConfig)


def load(profile: str, overrides: list[str] | tuple[str, ...] = ()) -> Week09Config:
    """Defaults <- ``week09.yaml`` <- ``profiles/<profile>.yaml`` <- ``key=value`` overrides."""
    return load_config(Week09Config, config_files(WEEK_DIR, "week09.yaml", profile), overrides)
