"""Models, built by name from a :class:`ModelConfig`."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from shared.models.cnn import SmallCNN
from shared.models.linear import SoftmaxRegression


@dataclass
class ModelConfig:
    """Which model to build and its sizes."""

    name: str = "softmax_regression"  # one of MODELS
    in_features: int = 784  # flattened input size
    num_classes: int = 10
    in_channels: int = 1  # image channels (small_cnn)
    width: int = 16  # first conv's channels (small_cnn)
    image_size: int = 28  # input height = width (small_cnn)


MODELS = {
    "softmax_regression": lambda c: SoftmaxRegression(c.in_features, c.num_classes),
    "small_cnn": lambda c: SmallCNN(c.in_channels, c.num_classes, c.width, c.image_size),
}


def build_model(cfg: ModelConfig) -> nn.Module:
    """Instantiate ``cfg.name``.

    Raises:
        ValueError: unknown model name (the message lists the known ones).
    """
    if cfg.name not in MODELS:
        raise ValueError(f"unknown model.name '{cfg.name}'. Known models: {', '.join(sorted(MODELS))}")
    return MODELS[cfg.name](cfg)


__all__ = ["MODELS", "ModelConfig", "SmallCNN", "SoftmaxRegression", "build_model"]
