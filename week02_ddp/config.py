"""Week 2's config: data, two models, the train loop, the process group, and the measurement plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shared.cli import config_files
from shared.config import load_config
from shared.data.mnist import MNISTConfig
from shared.dist import DistConfig
from shared.models import ModelConfig
from shared.train.config import TrainConfig

WEEK_DIR = Path(__file__).resolve().parent


@dataclass
class BenchPoint:
    """One system configuration of the throughput benchmark."""

    micro_batch: int = 128  # samples per rank per forward/backward
    grad_accum_steps: int = 1  # micro-batches per optimizer step
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
    max_amp_loss_gap: float = 0.1  # AMP final loss within this of fp32's (relative)
    bench_steps: int = 30  # timed optimizer steps per benchmark config (after warm-up)
    bench_warmup: int = 3  # untimed steps first (allocator, caches, autotuning)
    bench_rounds: int = 2  # each point is measured this often, in alternating order (drift and noise)
    ablation: list[BenchPoint] = field(
        default_factory=lambda: [BenchPoint(128, 1, "fp32"), BenchPoint(64, 2, "fp32"), BenchPoint(256, 1, "fp32"),
                                 BenchPoint(128, 1, "bf16"), BenchPoint(256, 1, "bf16"), BenchPoint(128, 1, "fp16")]
    )
    profile_warmup: int = 2  # torch.profiler warm-up steps
    profile_active: int = 3  # steps recorded in the trace


@dataclass
class Week02Config:
    """Top level of ``configs/ddp_mnist.yaml``."""

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


def load(profile: str, overrides: list[str] | tuple[str, ...] = ()) -> Week02Config:
    """Defaults <- ``configs/ddp_mnist.yaml`` <- ``configs/profiles/<profile>.yaml`` <- overrides."""
    return load_config(Week02Config, config_files(WEEK_DIR, "ddp_mnist.yaml", profile), overrides)
