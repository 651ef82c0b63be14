"""Week 5's config: corpus and tokenizer, model, training (optimizer, schedule, loop, eval estimate), the fixed
eval, the sample, the checks' thresholds, and the short runs of the ablation and the ladder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shared.cli import config_files
from shared.config import at_least, load_config, positive
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

    max_tokens: int = at_least(0, 0)  # evaluate the first N tokens of val.bin (0 = all)
    batch_size: int = at_least(1, 16)  # windows per forward pass (the result does not depend on it)


@dataclass
class CheckConfig:
    """Thresholds of the week's checks."""

    roundtrip_docs: int = 1000  # val documents that must survive decode(encode(x)) exactly
    sample_known_words: float = 0.6  # share of the sample's words that must occur in the training text
    time_budget_s: float = 1200.0  # the pipeline (corpus ... sample), seconds; the experiments are timed apart
    bpe_max_train_s: float = 60.0  # the hand-written BPE's training time on the corpus (the bench)
    bpe_min_mb_per_s: float = 1.0  # and its encoding speed, UTF-8 MB/s (first pass, empty cache)


@dataclass
class ShortRunConfig:
    """The small model and budget shared by every run of the ablation and the ladder (same token budget each)."""

    n_layer: int = at_least(1, 2)
    n_head: int = at_least(1, 2)
    n_embd: int = at_least(1, 64)
    block_size: int = at_least(1, 64)
    max_steps: int = at_least(1, 300)  # steps per run
    micro_batch: int = at_least(1, 16)
    eval_every: int = at_least(1, 100)
    eval_iters: int = at_least(1, 5)
    eval_tokens: int = at_least(0, 20000)  # final loss on the first N tokens of val.bin, every window (fixed set)
    select_tokens: int = at_least(1, 20000)  # the last N tokens of train.bin: never trained on; lr searches select on them


@dataclass
class AblationConfig:
    """Stabilisation: warm-up, clipping and accumulation varied one at a time; then the lr raised until the run
    without warm-up and clipping breaks (diverges, or ends no better than the unigram baseline minus ``margin``),
    and at that lr both variants on every seed."""

    # the "with warm-up" setting (0 is "without"): a third of the short run. Post-LN needs a long warm-up (Xiong et
    # al. 2020; Popel & Bojar 2018, https://arxiv.org/abs/1804.00247), and a short one may not rescue every seed
    warmup_steps: int = at_least(0, 100)
    grad_clip: float = 1.0  # the "with clipping" setting (0 is "without")
    accum_k: int = 4  # accumulation steps at an equal global batch (micro_batch / k per micro-batch)
    # swept upward from 2x the week's lr in x sqrt(2) steps, so the first lr that breaks the unprotected run is
    # close to where it starts to break
    high_lrs: list[float] = field(default_factory=lambda: [0.002, 0.0028, 0.004, 0.0057, 0.008, 0.0113, 0.016, 0.0226,
                                                           0.032, 0.045, 0.064, 0.09, 0.128])
    margin: float = positive(0.1)  # a run survives when its val loss ends this far below the unigram baseline
    seeds: list[int] = field(default_factory=lambda: [0, 1])  # at the breaking lr, both variants on each
    # Post-LN is the placement warm-up was invented for (Xiong et al. 2020, https://arxiv.org/abs/2002.04745: a Pre-LN
    # model trains without it); "pre" runs the ablation on the week's own placement instead
    norm_placement: str = "post"
    judge: bool = True  # False (smoke): runs this short cannot show it, so the check is SKIP with the numbers shown


@dataclass
class LadderConfig:
    """The modernisation ladder: from SGD + constant lr + LayerNorm + learned positions, one change per rung."""

    seeds: list[int] = field(default_factory=lambda: [0, 1])
    sgd_lrs: list[float] = field(default_factory=lambda: [0.03, 0.1, 0.3, 1.0])  # the baseline's SGD lr search
    tuned_lrs: list[float] = field(default_factory=lambda: [1e-3, 2e-3, 4e-3, 8e-3])  # the last rung's AdamW search
    warmup_steps: int = at_least(0, 50)  # rung 2's linear warm-up (Pre-LN needs little)
    margin: float = 0.05  # nats/token the best rung must beat the baseline by


@dataclass
class CompareConfig:
    """The tokenizers compared on the short-run model (bits per byte on val, every seed of the ladder)."""

    tokenizers: list[str] = field(default_factory=lambda: ["bpe", "sentencepiece"])


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
    compare: CompareConfig = field(default_factory=CompareConfig)

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
