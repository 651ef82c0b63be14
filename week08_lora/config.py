"""Week 8's config: the starting models (week 7's base and SFT export), the week-7 SFT task and harness, the
variants (full fine-tuning, LoRA by hand and by peft, QLoRA by hand and by bitsandbytes), the rank sweep, the
alpha/lr grid and the checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shared.cli import config_files
from shared.config import at_least, choose, in_range, load_config, positive
from shared.evals.instruct import HarnessConfig
from shared.nn.lora import LLAMA_TARGETS
from shared.tasks.sft import SFTTaskConfig
from shared.train.config import LoopConfig, OptimConfig, ScheduleConfig

WEEK_DIR = Path(__file__).resolve().parent
METHODS = ("full", "lora", "peft", "qlora", "bnb")
COMPUTE_DTYPES = ("bfloat16", "float32", "float16")


@dataclass
class ModelsConfig:
    """Where week 8 starts: week 7's SFT export and the base model it was fine-tuned from."""

    sft: str = "week07/sft-v1"  # under models/ ($AIFS_MODELS_ROOT); `make week07` writes it
    base: str = ""  # a registry name; "" = the base named in the SFT export's meta.json (a registry model or a
    # folder beside the export, e.g. week 7's tiny CI base)


@dataclass
class DataConfig:
    """Week 7's training records (v1) and its held-out val split, drawn the same way."""

    sources: list[str] = field(default_factory=lambda: ["alpaca", "llms_from_scratch_ch07"])
    val_examples: int = at_least(1, 48)
    split_seed: int = at_least(0, 0)
    limit: int = at_least(0, 0)  # only the first N records (0 = all; smoke)


@dataclass
class EvalSetConfig:
    """Week 7's frozen eval set, read by path (its sha256 pinned, so both weeks score the same items)."""

    path: str = "week07_sft/data/eval_set.jsonl"  # relative to the repository
    sha256: str = ""
    limit: int = at_least(0, 0)  # only the first N items (0 = all; smoke)


@dataclass
class AdapterConfig:
    """The LoRA adapters of every adapter variant (the sweep and the grid change r, alpha and lr)."""

    r: int = at_least(1, 16)
    alpha: float = positive(32.0)
    dropout: float = in_range(0, 1, 0.0, hi_open=True)  # 0: the hand-vs-peft runs can match step for step
    target_modules: list[str] = field(default_factory=lambda: list(LLAMA_TARGETS))
    lr: float = positive(5e-4)  # peak lr of adapter runs (full fine-tuning uses optim.lr)


@dataclass
class QuantConfig:
    """NF4 storage of the frozen base weights (QLoRA)."""

    block_size: int = at_least(16, 64)
    double_quant: bool = True
    compute_dtype: str = "bfloat16"  # the dtype weights are dequantised to for each matmul

    def validate(self) -> None:
        """Raises ChoiceError for an unknown compute dtype."""
        choose("quant.compute_dtype", self.compute_dtype, COMPUTE_DTYPES)


@dataclass
class RunConfig:
    """The budget every main variant trains for (the same steps, batches and data)."""

    max_steps: int = at_least(1, 20)
    methods: list[str] = field(default_factory=lambda: list(METHODS))  # the main variants, from the base model
    sft_method: str = "peft"  # the adapter trained on week 7's SFT export, merged and exported for week 11

    def validate(self) -> None:
        """Raises ChoiceError for an unknown method."""
        for m in [*self.methods, self.sft_method]:
            choose("run.methods", m, METHODS)


@dataclass
class SweepConfig:
    """How much rank the task needs (hand LoRA, alpha = alpha_per_rank x r so alpha/r stays fixed) and the
    alpha/lr interaction at one rank."""

    ranks: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 64])
    alpha_per_rank: float = positive(2.0)
    max_steps: int = at_least(1, 10)
    micro_batch: int = at_least(1, 4)
    grid_rank: int = at_least(1, 8)
    grid_alphas: list[float] = field(default_factory=lambda: [8.0, 32.0])
    grid_lrs: list[float] = field(default_factory=lambda: [5e-5, 5e-4])
    val_examples: int = at_least(0, 0)  # the first k val records score the sweep runs (0: all of them)


@dataclass
class BenchConfig:
    """Timed steps on one fixed batch (after one warm-up): QLoRA's compute dtype."""

    steps: int = at_least(1, 2)
    micro_batch: int = at_least(1, 4)
    other_dtype_steps: int = at_least(1, 2)  # timed steps of QLoRA at the other compute dtype (the Q&A's row)


@dataclass
class CheckConfig:
    """Thresholds of the week's checks."""

    time_budget_s: float = positive(2700.0)
    speed_slack: float = positive(0.15)  # the hand LoRA step may be at most this much slower than peft's
    parity_atol: float = positive(1e-4)  # |hand - peft| train loss at every step (fp32, same init and batches)
    grad_cos: float = in_range(0, 1, 0.99)  # adapter gradients agree when their cosine similarity is at least this
    judge_eval: bool = True  # False (smoke): a random tiny model's harness numbers are noise
    judge_speed: bool = True  # False (smoke): millisecond steps on a shared CI machine are noise


@dataclass
class Week08Config:
    """Top level of ``configs/week08.yaml``."""

    models: ModelsConfig = field(default_factory=ModelsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval_set: EvalSetConfig = field(default_factory=EvalSetConfig)
    sft: SFTTaskConfig = field(default_factory=SFTTaskConfig)
    lora: AdapterConfig = field(default_factory=AdapterConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    run: RunConfig = field(default_factory=RunConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    harness: HarnessConfig = field(default_factory=HarnessConfig)
    check: CheckConfig = field(default_factory=CheckConfig)


def load(profile: str, overrides: list[str] | tuple[str, ...] = ()) -> Week08Config:
    """Defaults <- ``week08.yaml`` <- ``profiles/<profile>.yaml`` <- ``key=value`` overrides."""
    return load_config(Week08Config, config_files(WEEK_DIR, "week08.yaml", profile), overrides)
