"""Models: the classifiers, built by name from a :class:`ModelConfig`, and the GPT language model (:class:`GPTConfig`)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from shared.models.cnn import SmallCNN
from shared.models.convnet import CNNSmall, ResNet9, init_weights
from shared.models.gpt import GPT, GPTConfig
from shared.models.linear import SoftmaxRegression


@dataclass
class ModelConfig:
    """Which model to build and its sizes."""

    name: str = "softmax_regression"  # one of MODELS
    in_features: int = 784  # flattened input size
    num_classes: int = 10
    in_channels: int = 1  # image channels (conv models: 1 for MNIST, 3 for CIFAR)
    width: int = 16  # first conv's channels (conv models; later stages are multiples of it)
    image_size: int = 28  # input height = width (small_cnn, the MNIST CNN of week 2)
    norm: str = "batch"  # "batch", "layer" (GroupNorm(1)) or "none" (cnn_small and resnet9, the CIFAR models)
    init: str = "default"  # "default", "kaiming" or "xavier": weights re-initialised after building
    dropout: float = 0.0  # before the classifier head (cnn_small)


MODELS = {
    "softmax_regression": lambda c: SoftmaxRegression(c.in_features, c.num_classes),
    "small_cnn": lambda c: SmallCNN(c.in_channels, c.num_classes, c.width, c.image_size),
    "cnn_small": lambda c: CNNSmall(c.in_channels, c.num_classes, c.width, c.norm, c.dropout),
    "resnet9": lambda c: ResNet9(c.in_channels, c.num_classes, c.width, c.norm),
}


def build_model(cfg: ModelConfig) -> nn.Module:
    """Instantiate ``cfg.name``.

    Raises:
        ValueError: unknown model name, norm or init (the message lists the known ones).
    """
    if cfg.name not in MODELS:
        raise ValueError(f"unknown model.name '{cfg.name}'. Known models: {', '.join(sorted(MODELS))}")
    return init_weights(MODELS[cfg.name](cfg), cfg.init)


__all__ = ["GPT", "MODELS", "CNNSmall", "GPTConfig", "ModelConfig", "ResNet9", "SmallCNN", "SoftmaxRegression", "build_model", "init_weights"]
