"""Week 1's config: the shared sections plus the week's experiment plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shared.cli import config_files
from shared.config import at_least, load_config
from shared.data.mnist import MNISTConfig
from shared.models import ModelConfig
from shared.train.config import TrainConfig

WEEK_DIR = Path(__file__).resolve().parent


@dataclass
class ExperimentConfig:
    """What the week runs besides the baseline."""

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # the baseline is rerun with each
    lr_grid: list[float] = field(default_factory=lambda: [10.0, 1.0, 0.1, 0.01, 0.001])  # LR ablation points
    lr_seeds: list[int] = field(default_factory=lambda: [0, 1])  # each point runs once per seed (>= 2: the spread)
    ablation_epochs: int = at_least(1, 1)  # epochs per LR ablation run (short on purpose)
    min_val_acc: float = 0.91  # softmax regression must reach this val accuracy
    max_seed_std: float = 0.005  # seeds are "consistent" if val-acc std is below this


@dataclass
class Week01Config:
    """Top level of ``configs/mnist_baseline.yaml``."""

    data: MNISTConfig = field(default_factory=lambda: MNISTConfig(view="flat"))
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)


def load(profile: str, overrides: list[str] | tuple[str, ...] = ()) -> Week01Config:
    """Defaults <- ``configs/mnist_baseline.yaml`` <- ``configs/profiles/<profile>.yaml`` <- overrides."""
    return load_config(Week01Config, config_files(WEEK_DIR, "mnist_baseline.yaml", profile), overrides)
