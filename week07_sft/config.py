"""Week 7's config: the base model, the data (v1 and the cleaning of v2), the SFT runs, the TRL reference, the
over-fitting study, the from-scratch GPT row, the eval harness and the checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shared.cli import config_files
from shared.config import at_least, choose, in_range, load_config, positive
from shared.data.dedup import DedupConfig
from shared.data.instruct_clean import CleanConfig
from shared.evals.instruct import HarnessConfig
from shared.tasks.sft import SFTTaskConfig
from shared.train.config import LoopConfig, OptimConfig, ScheduleConfig

WEEK_DIR = Path(__file__).resolve().parent
BASE_SOURCES = ("registry", "tiny_llama")


@dataclass
class BaseModelConfig:
    """The model every SFT run starts from."""

    source: str = "registry"  # "registry" (a model of shared.models.registry) or "tiny_llama" (random, for CI)
    name: str = "smollm2-135m-instruct"  # the registry name (source=registry)
    # source=tiny_llama: a random LlamaConfig and a byte-level BPE trained on the training records (no download)
    vocab_size: int = at_least(300, 1024)
    hidden_size: int = at_least(8, 64)
    num_layers: int = at_least(1, 2)
    num_heads: int = at_least(1, 4)
    seed: int = 0

    def validate(self) -> None:
        """Raises ChoiceError naming an unknown ``base.source``."""
        choose("base.source", self.source, BASE_SOURCES)


@dataclass
class DataConfig:
    """Training records (v1 = all of them, formatted; v2 = after the cleaning rules) and the held-out val split."""

    sources: list[str] = field(default_factory=lambda: ["alpaca", "llms_from_scratch_ch07"])
    val_examples: int = at_least(1, 48)  # records held out (seeded) for the val loss, before any cleaning
    split_seed: int = at_least(0, 0)
    limit: int = at_least(0, 0)  # use only the first N training records (0 = all; smoke)
    examples: int = at_least(0, 5)  # removed records shown per cleaning rule


@dataclass
class EvalSetConfig:
    """The frozen eval set (``python -m week07_sft.evalset`` writes it; the run verifies its hash)."""

    path: str = "data/eval_set.jsonl"  # relative to week07_sft/
    sha256: str = ""  # of the file; a mismatch is an error
    size: int = at_least(6, 40)
    min_task_types: int = at_least(1, 6)
    sources: list[str] = field(default_factory=lambda: ["self_instruct", "alpaca_eval"])
    max_reference_words: int = at_least(1, 120)  # references longer than this are not drawn
    seed: int = 0
    min_constrained: int = at_least(0, 8)  # items whose instruction has a checkable constraint (drawn first)
    limit: int = at_least(0, 0)  # score only the first N items (0 = all; smoke); the file interleaves task types


@dataclass
class SFTRunConfig:
    """One SFT budget, the same for v1, v2 and the TRL reference."""

    max_steps: int = at_least(1, 20)
    # the order of the examples; v1 and v2 train once per seed and the v1-vs-v2 verdict averages each eval item over
    # them (the first seed's runs are the exported sft-v1 / sft-v2)
    seeds: list[int] = field(default_factory=lambda: [0, 1])


@dataclass
class TRLConfig:
    """The reference: TRL's SFTTrainer with completion-only loss on the same data, model and hyper-parameters."""

    enabled: bool = True
    loss_rtol: float = positive(2e-5)  # each fp32 loss vs the exact (fp64) one on a fixed batch (see trl_ref.py)
    parity_rel: float = positive(0.05)  # eval loss after the same steps, relative difference allowed
    bench_steps: int = at_least(1, 3)  # timed steps per implementation (after one warm-up) on the same batch
    speed_slack: float = positive(0.10)  # the project's step may be at most this much slower than TRL's


@dataclass
class OverfitConfig:
    """Train and val loss over several epochs of a small subset; memorisation on train vs eval prompts."""

    examples: int = at_least(1, 16)
    epochs: int = at_least(3, 4)
    evals_per_epoch: int = at_least(1, 2)
    rouge_threshold: float = in_range(0, 1, 0.9)  # an answer with ROUGE-L >= this reproduces the reference
    lr: float = at_least(0, 0.0)  # peak lr of this run (0 = optim.lr)


@dataclass
class ScratchConfig:
    """The from-scratch row: the project's GPT exported by week 5 (HF format), SFT'd with the same objective."""

    path: str = "week05/gpt-{profile}"  # under models/ ($AIFS_MODELS_ROOT); {profile}: the profile that exported it
    export_profile: str = "cpu"
    max_steps: int = at_least(1, 60)
    lr: float = positive(1e-3)
    micro_batch: int = at_least(1, 16)


@dataclass
class CheckConfig:
    """Thresholds of the week's checks."""

    time_budget_s: float = positive(2700.0)  # the whole week on this profile
    alpha: float = in_range(0, 1, 0.05, lo_open=True)  # family-wise level of the paired v1-vs-v2 tests
    judge_eval: bool = True  # False (smoke): a random tiny model's harness numbers are noise; compared, not judged
    judge_speed: bool = True  # False (smoke): millisecond steps on a shared CI machine are noise; shown, not judged


@dataclass
class Week07Config:
    """Top level of ``configs/week07.yaml``."""

    base: BaseModelConfig = field(default_factory=BaseModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    eval_set: EvalSetConfig = field(default_factory=EvalSetConfig)
    overlap: DedupConfig = field(default_factory=DedupConfig)  # eval vs train near-duplicates
    sft: SFTTaskConfig = field(default_factory=SFTTaskConfig)
    run: SFTRunConfig = field(default_factory=SFTRunConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    trl: TRLConfig = field(default_factory=TRLConfig)
    overfit: OverfitConfig = field(default_factory=OverfitConfig)
    scratch: ScratchConfig = field(default_factory=ScratchConfig)
    harness: HarnessConfig = field(default_factory=HarnessConfig)
    check: CheckConfig = field(default_factory=CheckConfig)


def load(profile: str, overrides: list[str] | tuple[str, ...] = ()) -> Week07Config:
    """Defaults <- ``week07.yaml`` <- ``profiles/<profile>.yaml`` <- ``key=value`` overrides."""
    return load_config(Week07Config, config_files(WEEK_DIR, "week07.yaml", profile), overrides)
