"""Week 2's config: data, two models, the train loop, the process group, and the measurement plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shared.cli import config_files
from shared.config import at_least, load_config
from shared.data.mnist import MNISTConfig
from shared.dist import DistConfig
from shared.models import ModelConfig
from shared.train.config import TrainConfig

WEEK_DIR = Path(__file__).resolve().parent


@dataclass
class BenchPoint:
    """One system configuration of the throughput benchmark."""

    micro_batch: int = at_least(1, 128)  # samples per rank per forward/backward
    grad_accum_steps: int = at_least(1, 1)  # micro-batches per optimizer step
    precision: str = "fp32"  # fp32 | bf16 | fp16

    @property
    def label(self) -> str:
        return f"{self.micro_batch}x{self.grad_accum_steps} {self.precision}"


@dataclass
class ExperimentConfig:
    """What the week measures and the thresholds its checks use."""

    accum_steps: int = 2  # accumulation run: micro batch / accum_steps, accum_steps micro-steps per optimizer step
    max_acc_gap: float = 0.005  # |val acc(single) - val acc(DDP)| and accumulation gap allowed
    max_loss_gap: float = 0.02  # mean |train loss difference| per step allowed between curves that should match
    amp_precisions: list[str] = field(default_factory=lambda: ["fp32", "bf16", "fp16"])
    max_amp_loss_gap: float = 0.1  # AMP final loss within this of fp32's (relative); also the ablation's loss tolerance
    max_skipped_frac: float = 0.1  # a benchmark run is stable with at most this share of GradScaler-skipped steps
    bench_steps: int = at_least(1, 30)  # timed optimizer steps per benchmark config (after warm-up)
    bench_warmup: int = 3  # untimed steps first (allocator, caches, autotuning)
    bench_rounds: int = 3  # each point is measured this often, in alternating order; >= 2 to know the noise
    max_unaccounted: float = 0.1  # the timed phases must sum to the measured step within this share
    min_bottleneck_share: float = 0.5  # a bottleneck is one kind of work taking at least this share of the step
    ablation: list[BenchPoint] = field(
        default_factory=lambda: [BenchPoint(128, 1, "fp32"), BenchPoint(64, 2, "fp32"), BenchPoint(256, 1, "fp32"),
                                 BenchPoint(128, 1, "bf16"), BenchPoint(256, 1, "bf16"), BenchPoint(128, 1, "fp16")]
    )
    profile_warmup: int = 2  # torch.profiler warm-up steps
    profile_active: int = 3  # steps recorded in the trace


@dataclass
class Week02Config:
    """Top level of ``configs/mnist_ddp_amp.yaml``."""

    data: MNISTConfig = field(default_factory=lambda: MNISTConfig(view="image"))
    softmax: ModelConfig = field(default_factory=ModelConfig)
    cnn: ModelConfig = field(default_factory=lambda: ModelConfig(name="small_cnn"))
    train: TrainConfig = field(default_factory=TrainConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)


@dataclass
class RunConfig:
    """What identifies one training run's directory (its hash names the folder)."""

    data: MNISTConfig
    model: ModelConfig
    train: TrainConfig
    world_size: int


BASE_CONFIG = "mnist_ddp_amp.yaml"  # the week's one base config: MNIST, 1 or N processes (DDP), the AMP plan


def load(profile: str, overrides: list[str] | tuple[str, ...] = ()) -> Week02Config:
    """Defaults <- ``configs/mnist_ddp_amp.yaml`` <- ``configs/profiles/<profile>.yaml`` <- overrides."""
    return load_config(Week02Config, config_files(WEEK_DIR, BASE_CONFIG, profile), overrides)
