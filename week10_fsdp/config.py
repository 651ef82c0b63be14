"""Week 10's config: the two tasks trained under DDP and FSDP2 (the week-5 LM, the week-7 SFT task), the parity runs,
the memory probes, the throughput benchmark, FSDP2's options and the checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shared.cli import config_files
from shared.config import ConfigError, at_least, in_range, load_config, positive
from shared.data.lm import LMDataConfig
from shared.dist import DistConfig
from shared.parallel import FSDPConfig
from shared.tasks.sft import SFTTaskConfig
from shared.train.config import LoopConfig, OptimConfig, ScheduleConfig

WEEK_DIR = Path(__file__).resolve().parent


@dataclass
class LMShape:
    """The week-5 GPT's shape (its vocabulary comes from the tokenizer)."""

    block_size: int = at_least(8, 128)
    n_layer: int = at_least(1, 4)
    n_head: int = at_least(1, 4)
    n_embd: int = at_least(8, 128)


@dataclass
class SFTBase:
    """The model the SFT task trains: ``lm_export``, the GPT this week pre-trained with FSDP2 (its export in
    ``models/week10/lm-fsdp2``, with its tokenizer: an FSDP-trained model carried into the next stage); ``registry``,
    SmolLM2-135M-Instruct (``n_layer`` > 0 keeps its first n blocks); or ``tiny_llama``, a random tiny Llama (CI)."""

    source: str = "lm_export"  # "lm_export", "registry" or "tiny_llama"
    name: str = "smollm2-135m-instruct"
    n_layer: int = at_least(0, 0)  # 0 = every block
    vocab_size: int = at_least(300, 512)  # tiny_llama only
    hidden_size: int = at_least(8, 32)
    num_layers: int = at_least(1, 2)
    num_heads: int = at_least(1, 2)

    def validate(self) -> None:
        if self.source not in ("lm_export", "registry", "tiny_llama"):
            raise ConfigError(f"sft.base.source='{self.source}': choose lm_export, registry or tiny_llama")


@dataclass
class SFTSetup:
    """The week-7 SFT task: instruction records -> response-only labels."""

    base: SFTBase = field(default_factory=SFTBase)
    sources: list[str] = field(default_factory=lambda: ["alpaca"])
    limit: int = at_least(0, 6000)  # records read (0 = all)
    val_examples: int = at_least(1, 32)
    split_seed: int = 0
    task: SFTTaskConfig = field(default_factory=lambda: SFTTaskConfig(max_length=128, train_eval_examples=0))
    lr: float = positive(2e-5)


@dataclass
class ParityConfig:
    """DDP vs FSDP2 on the same batches: steps, the accumulation variant, the tolerance."""

    steps: int = at_least(1, 50)
    micro_batch: int = at_least(1, 4)  # per rank
    grad_accum_steps: int = at_least(2, 2)  # the accumulation pair (DDP and FSDP2 both accumulate)
    sft_micro_batch: int = at_least(1, 2)
    tasks: list[str] = field(default_factory=lambda: ["lm", "sft"])


@dataclass
class MemoryConfig:
    """The memory probes: world sizes, the batch they measure, the doc."""

    world_sizes: list[int] = field(default_factory=lambda: [1, 2, 4])
    reshard_world_sizes: list[int] = field(default_factory=lambda: [4])  # child jobs that reload the DCP checkpoint
    accelerate: bool = True  # also run the probe under `accelerate launch`
    minimal: bool = True  # run week10_fsdp/minimal.py
    micro_batch: int = at_least(1, 4)
    write_doc: bool = True  # write docs/memory.md from the measurements (off for smoke: CI must not dirty the tree)


@dataclass
class BenchConfig:
    """Tokens/s of DDP, FSDP2 and FSDP2 + activation checkpointing at the launch's world size."""

    steps: int = at_least(1, 10)
    warmup: int = at_least(0, 3)
    micro_batch: int = at_least(1, 8)


@dataclass
class CheckConfig:
    """Thresholds of the week's checks."""

    time_budget_s: float = positive(1500.0)
    parity_atol: float = positive(1e-5)  # |DDP - FSDP2| train loss at every step (fp32)
    memory_rtol: float = in_range(0, 1, 0.05)  # |measured / formula - 1|
    reshard_atol: float = positive(1e-5)  # val loss of the resharded model vs the saved run's
    run_pitfall_tests: bool = True  # run the pitfall tests (pytest) and report each one


@dataclass
class Week10Config:
    """Top level of ``configs/week10.yaml``."""

    lm_data: LMDataConfig = field(default_factory=LMDataConfig)
    lm: LMShape = field(default_factory=LMShape)
    sft: SFTSetup = field(default_factory=SFTSetup)
    parity: ParityConfig = field(default_factory=ParityConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    fsdp: FSDPConfig = field(default_factory=FSDPConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    check: CheckConfig = field(default_factory=CheckConfig)


def load(profile: str, overrides: list[str] | tuple[str, ...] = ()) -> Week10Config:
    """Defaults <- ``week10.yaml`` <- ``profiles/<profile>.yaml`` <- ``key=value`` overrides."""
    cfg = load_config(Week10Config, config_files(WEEK_DIR, "week10.yaml", profile), overrides)
    cfg.sft.base.validate()
    cfg.fsdp.validate()
    unknown = set(cfg.parity.tasks) - {"lm", "sft"}
    if unknown:
        raise ConfigError(f"parity.tasks has {sorted(unknown)}: choose from lm, sft")
    return cfg
