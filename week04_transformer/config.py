"""Week 4's config: the text, the GPT's shape, the training run (optimizer, schedule, loop, eval), sampling, the
checks' targets, the benchmark."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shared.cli import config_files
from shared.config import at_least, in_range, load_config
from shared.models.generation import SampleConfig
from shared.models.gpt import GPTConfig
from shared.tasks.lm import LMTaskConfig
from shared.train.config import LoopConfig, OptimConfig, ScheduleConfig, run_identity
from shared.train.pretrain import LMSetup

WEEK_DIR = Path(__file__).resolve().parent


@dataclass
class DataConfig:
    """Which text, and how it is split."""

    dataset: str = "tiny_shakespeare"  # a single-file text dataset of the registry
    val_frac: float = in_range(0, 1, 0.1, lo_open=True, hi_open=True)  # the last 10% of the characters is validation (nanoGPT's split)


@dataclass
class CheckConfig:
    """Targets of the week's checks."""

    target_val_loss: float = 2.0  # nats/char the run must reach
    time_budget_s: float = 600.0  # the whole week (process start to log), seconds
    backend_atol: float = 1e-5  # |loss(manual) - loss(torch)| on one batch, fp32


@dataclass
class BenchConfig:
    """Throughput benchmark: timed training steps per attention backend."""

    steps: int = at_least(1, 10)  # timed steps per backend
    warmup: int = at_least(0, 3)  # untimed steps first (and torch.compile's compilation)
    backends: list[str] = field(default_factory=lambda: ["manual", "torch"])


@dataclass
class Week04Config:
    """Top level of ``configs/char_gpt.yaml``."""

    data: DataConfig = field(default_factory=DataConfig)
    model: GPTConfig = field(default_factory=GPTConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    task: LMTaskConfig = field(default_factory=LMTaskConfig)
    sample: SampleConfig = field(default_factory=lambda: SampleConfig(prompt="\n", max_new_tokens=300, top_k=40))
    check: CheckConfig = field(default_factory=CheckConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)

    def setup(self) -> LMSetup:
        """The training run's settings, for :func:`shared.train.pretrain.pretrain`."""
        return LMSetup(self.model, self.optim, self.schedule, self.loop, self.task)


@dataclass
class RunConfig:
    """What identifies the training run's directory (and so what a re-run resumes): the data, the model, the
    optimizer, schedule and loop (except the settings that only say when to stop or how to show progress), the
    eval, and the samples (which are stored with the run's evals)."""

    data: DataConfig
    model: GPTConfig
    optim: OptimConfig
    schedule: ScheduleConfig
    loop: LoopConfig
    task: LMTaskConfig
    sample: SampleConfig


def run_config(cfg: Week04Config) -> RunConfig:
    """``cfg`` reduced to the training run's identity (``loop.stop_at``, ``resume``, ``progress`` normalised)."""
    return RunConfig(cfg.data, cfg.model, cfg.optim, cfg.schedule, run_identity(cfg.loop), cfg.task, cfg.sample)


def load(profile: str, overrides: list[str] | tuple[str, ...] = ()) -> Week04Config:
    """Defaults <- ``char_gpt.yaml`` <- ``profiles/<profile>.yaml`` <- ``key=value`` overrides."""
    return load_config(Week04Config, config_files(WEEK_DIR, "char_gpt.yaml", profile), overrides)
