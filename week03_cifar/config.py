"""Week 3's config: CIFAR-10 data, the baseline CNN and its training, the ablation plan, the speed track."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shared.cli import config_files
from shared.config import load_config
from shared.data.cifar import CIFARConfig
from shared.models import ModelConfig
from shared.train.config import TrainConfig

WEEK_DIR = Path(__file__).resolve().parent
ABLATIONS = ("optimizer", "init", "norm", "regularisation")


@dataclass
class ExperimentConfig:
    """What the week measures beyond the baseline, and the thresholds of its checks."""

    target_acc: float = 0.6  # "epochs to X" in the optimizer ablation: first epoch with val acc >= this
    curve_steps: int = 200  # the init ablation overlays the first N training steps
    train_eval_size: int = 5000  # training images (no augmentation) evaluated for the train/val gap
    error_grid: int = 32  # misclassified test images shown
    seeds: list[int] = field(default_factory=lambda: [0, 1])  # every ablation variant runs once per seed (>= 2)
    first_loss_tol: float = 0.75  # baseline check: |first-step loss - ln(classes)| <= this (nats)
    min_loss_drop: float = 0.1  # baseline check: last-window mean loss <= (1 - this) x first-window mean
    min_val_acc: float = 0.2  # baseline check: final val accuracy >= this (twice chance for 10 classes)
    min_categorised: int = 30  # error check: test errors in confusion pairs that carry a fit signal
    signal_z: float = 2.0  # a pair overfits when its test rate exceeds its train rate by z >= this
    signal_min_train: int = 5  # ... and underfits (z below that) when >= this many training images share it


@dataclass
class SpeedConfig:
    """The speed track: ResNet-9 with a one-cycle (linear warm-up/decay) schedule to a test-accuracy target."""

    model: ModelConfig = field(default_factory=lambda: ModelConfig(name="resnet9", in_channels=3, width=64))
    train: TrainConfig = field(default_factory=TrainConfig)
    batch_size: int = 512  # training batch
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    target_acc: float = 0.94  # test accuracy to reach
    warmup_frac: float = 0.2  # share of the steps spent warming up to the peak lr
    train_subset: int = 0  # first N images of the (possibly already subset) training split; 0 = all


@dataclass
class Week03Config:
    """Top level of ``configs/cifar_baseline.yaml``."""

    data: CIFARConfig = field(default_factory=CIFARConfig)
    model: ModelConfig = field(default_factory=lambda: ModelConfig(name="cnn_small", in_channels=3, width=32))
    train: TrainConfig = field(default_factory=TrainConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)


@dataclass
class SpeedRunConfig:
    """What identifies one speed-track run's directory."""

    data: CIFARConfig
    speed: SpeedConfig
    train: TrainConfig  # speed.train with this run's seed and warm-up steps


def ablation_files(group: str) -> list[Path]:
    """The variant files of one ablation, ``configs/ablations/<group>/*.yaml``, in name order."""
    return sorted((WEEK_DIR / "configs" / "ablations" / group).glob("*.yaml"))


def load(profile: str, overrides: list[str] | tuple[str, ...] = (), variant: Path | None = None) -> Week03Config:
    """Defaults <- ``cifar_baseline.yaml`` <- ``profiles/<profile>.yaml`` <- an ablation variant <- overrides."""
    files = config_files(WEEK_DIR, "cifar_baseline.yaml", profile) + ([variant] if variant else [])
    return load_config(Week03Config, files, overrides)
