"""Week 5's config: corpus and tokenizer, model, training (optimizer, schedule, loop, eval estimate), the fixed
eval, the sample, the checks' thresholds, and the short runs of the ablation and the ladder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shared.cli import config_files
from shared.config import load_config
from shared.data.lm import LMDataConfig
from shared.models.generation import SampleConfig
from shared.models.gpt import GPTConfig
from shared.tasks.lm import LMTaskConfig
from shared.train.config import LoopConfig, OptimConfig, ScheduleConfig, run_identity
from shared.train.pretrain import LMSetup

WEEK_DIR = Path(__file__).resolve().parent


@dataclass
class EvalConfig:
    """The fixed validation set of the perplexity stage."""

    max_tokens: int = 0  # evaluate the first N tokens of val.bin (0 = all)
    batch_size: int = 16  # windows per forward pass (the result does not depend on it)


@dataclass
class CheckConfig:
    """Thresholds of the week's checks."""

    roundtrip_docs: int = 1000  # val documents that must survive decode(encode(x)) exactly
    sample_known_words: float = 0.6  # share of the sample's words that must occur in the training text
    time_budget_s: float = 1200.0  # the whole pipeline, seconds


@dataclass
class ShortRunConfig:
    """The small model and budget shared by every run of the ablation and the ladder (same token budget each)."""

    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 64
    block_size: int = 64
    max_steps: int = 300  # steps per run
    micro_batch: int = 16
    eval_every: int = 100
    eval_iters: int = 5
    eval_tokens: int = 20000  # final loss on the first N tokens of val.bin, every window (fixed set)


@dataclass
class AblationConfig:
    """Stabilisation: warm-up, clipping and accumulation varied one at a time, plus a too-high lr with and
    without them."""

    warmup_steps: int = 50  # the "with warm-up" setting (0 is "without")
    grad_clip: float = 1.0  # the "with clipping" setting (0 is "without")
    accum_k: int = 4  # accumulation steps at an equal global batch (micro_batch / k per micro-batch)
    high_lr: float = 0.01  # deliberately too high (10x the default optim.lr)


@dataclass
class LadderConfig:
    """The modernisation ladder: from SGD + constant lr + LayerNorm + learned positions, one change per rung."""

    seeds: list[int] = field(default_factory=lambda: [0, 1])
    sgd_lr: float = 0.1  # the baseline's SGD (momentum 0.9) learning rate
    tuned_lrs: list[float] = field(default_factory=lambda: [2e-3, 4e-3])  # tried on the first seed for the last rung
    margin: float = 0.05  # nats/token the best rung must beat the baseline by


@dataclass
class BenchConfig:
    """Throughput and memory over a grid of sequence lengths x micro-batch sizes (timed training steps)."""

    seq_lens: list[int] = field(default_factory=lambda: [64, 128, 256])
    micro_batches: list[int] = field(default_factory=lambda: [4, 16])
    steps: int = 5
    warmup: int = 2


@dataclass
class Week05Config:
    """Top level of ``configs/pipeline.yaml``."""

    data: LMDataConfig = field(default_factory=LMDataConfig)
    model: GPTConfig = field(default_factory=GPTConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    task: LMTaskConfig = field(default_factory=LMTaskConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    check: CheckConfig = field(default_factory=CheckConfig)
    short: ShortRunConfig = field(default_factory=ShortRunConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)
    ladder: LadderConfig = field(default_factory=LadderConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)

    def setup(self) -> LMSetup:
        """The main run's settings, for :func:`shared.train.pretrain.pretrain`."""
        return LMSetup(self.model, self.optim, self.schedule, self.loop, self.task)


@dataclass
class TrainRunConfig:
    """What identifies a training run (and so what a re-run resumes): the data, the model, the optimizer, schedule
    and loop (except the settings that only say when to stop or how to show progress) and the eval estimate."""

    data: LMDataConfig
    model: GPTConfig
    optim: OptimConfig
    schedule: ScheduleConfig
    loop: LoopConfig
    task: LMTaskConfig


def train_run_config(data: LMDataConfig, setup: LMSetup) -> TrainRunConfig:
    return TrainRunConfig(data, setup.model, setup.optim, setup.schedule, run_identity(setup.loop), setup.task)


def load(profile: str, overrides: list[str] | tuple[str, ...] = ()) -> Week05Config:
    """Defaults <- ``pipeline.yaml`` <- ``profiles/<profile>.yaml`` <- ``key=value`` overrides."""
    return load_config(Week05Config, config_files(WEEK_DIR, "pipeline.yaml", profile), overrides)
