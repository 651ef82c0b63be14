"""Week 6's config: the data versions (sources, split, dedup, quality filters, tokenizer), the A/B model and its
token budget, the budget demo (a token and a wall-clock budget), the IsoFLOP sweep, the memo and the checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shared.cli import config_files
from shared.config import at_least, in_range, load_config, positive
from shared.data.dedup import DedupConfig
from shared.data.quality import QualityConfig
from shared.models.gpt import GPTConfig
from shared.tasks.lm import LMTaskConfig
from shared.train.config import LoopConfig, OptimConfig, ScheduleConfig

WEEK_DIR = Path(__file__).resolve().parent


@dataclass
class DataConfig:
    """Corpus A = every named source as documents; the split, by document group, is made before any filtering."""

    sources: list[str] = field(default_factory=lambda: ["tiny_shakespeare", "alpaca", "llms_from_scratch_ch07",
                                                        "hh_rlhf"])
    extra: list[str] = field(default_factory=list)  # online: [tinystories]
    val_frac: float = in_range(0, 1, 0.05, lo_open=True, hi_open=True)  # share of document groups held out
    split_seed: int = at_least(0, 0)
    vocab_size: int = at_least(260, 2048)  # the hand-written byte-level BPE, trained on corpus A's training documents
    tokenizer_max_lines: int = at_least(1, 200_000)  # whole documents sampled (seeded) for the BPE's pair counts
    pad_vocab_to: int = at_least(1, 64)
    examples: int = at_least(0, 5)  # removed documents shown per filter in the log


@dataclass
class ABConfig:
    """A vs B at the same token budget, on every seed."""

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    max_tokens: int = at_least(1, 400_000)  # the token budget of each run
    alpha: float = in_range(0, 1, 0.05, lo_open=True, hi_open=True)  # significance level of Welch's test
    samples: int = at_least(0, 3)  # samples from each version's seed-0 model, same seed and temperature
    sample_tokens: int = at_least(1, 60)
    temperature: float = positive(0.8)


@dataclass
class DemoConfig:
    """Day 36: the same model under a token budget and under a wall-clock budget, estimate beside actual."""

    max_tokens: int = at_least(1, 200_000)
    max_seconds: float = positive(20.0)


@dataclass
class SizeConfig:
    """One model size of the IsoFLOP sweep."""

    n_layer: int = at_least(1, 2)
    n_head: int = at_least(1, 2)
    n_embd: int = at_least(1, 64)


@dataclass
class IsoFLOPConfig:
    """Chinchilla approach 2: every size at every budget, D = C / (FLOPs per token)."""

    budgets: list[float] = field(default_factory=lambda: [3e11, 9e11, 2.7e12])  # C, training FLOPs per run
    sizes: list[SizeConfig] = field(default_factory=lambda: [SizeConfig(1, 2, 16), SizeConfig(1, 2, 32),
                                                             SizeConfig(2, 2, 48), SizeConfig(2, 4, 64),
                                                             SizeConfig(3, 4, 96)])
    block_size: int = at_least(1, 64)
    micro_batch: int = at_least(1, 16)
    lr: float = positive(3e-3)
    warmup_frac: float = in_range(0, 1, 0.05)  # warm-up as a share of each run's steps
    min_steps: int = at_least(1, 20)  # a (size, budget) with fewer steps is left out (too few to mean anything)
    bootstrap: int = at_least(10, 2000)
    level: float = in_range(0, 1, 0.9, lo_open=True, hi_open=True)  # of the bootstrap intervals
    seed: int = 0
    judge: bool = True  # False (smoke): a few dozen steps per run are noise, so the check is SKIP, numbers shown


@dataclass
class MemoConfig:
    """The budget memo: the recommendation for ``budget_flops`` and the reproduction of one of its runs."""

    budget_flops: float = positive(1e13)  # the stated budget the memo recommends for
    reproduce: bool = True


@dataclass
class CheckConfig:
    """Thresholds of the week's checks."""

    time_ratio_lo: float = positive(0.75)  # estimate vs actual training time: the ±25% target
    time_ratio_hi: float = positive(1.25)
    time_budget_s: float = positive(1500.0)  # the whole week on this profile
    probe_s: float = positive(1.0)  # seconds of timed steps behind each pre-flight time estimate


@dataclass
class Week06Config:
    """Top level of ``configs/week06.yaml``."""

    data: DataConfig = field(default_factory=DataConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    model: GPTConfig = field(default_factory=GPTConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    task: LMTaskConfig = field(default_factory=LMTaskConfig)
    ab: ABConfig = field(default_factory=ABConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    isoflop: IsoFLOPConfig = field(default_factory=IsoFLOPConfig)
    memo: MemoConfig = field(default_factory=MemoConfig)
    check: CheckConfig = field(default_factory=CheckConfig)


def load(profile: str, overrides: list[str] | tuple[str, ...] = ()) -> Week06Config:
    """Defaults <- ``week06.yaml`` <- ``profiles/<profile>.yaml`` <- ``key=value`` overrides."""
    return load_config(Week06Config, config_files(WEEK_DIR, "week06.yaml", profile), overrides)
