"""Models: the classifiers, built by name from a :class:`ModelConfig`, and the GPT language model (:class:`GPTConfig`)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from shared.config import at_least, choose, in_range
from shared.models.cnn import SmallCNN
from shared.models.convnet import CNNSmall, ResNet9, init_weights
from shared.models.gpt import GPT, GPTConfig
from shared.models.linear import SoftmaxRegression


@dataclass
class ModelConfig:
    """Which model to build and its sizes."""

    name: str = "softmax_regression"  # one of MODELS
    in_features: int = at_least(1, 784)  # flattened input size
    num_classes: int = at_least(2, 10)  # classes of the output layer
    in_channels: int = at_least(1, 1)  # image channels (conv models: 1 for MNIST, 3 for CIFAR)
    width: int = at_least(1, 16)  # first conv's channels (conv models; later stages are multiples of it)
    image_size: int = at_least(1, 28)  # input height = width (small_cnn, the MNIST CNN of week 2)
    norm: str = "batch"  # "batch", "layer" (GroupNorm(1)) or "none" (cnn_small and resnet9, the CIFAR models)
    init: str = "default"  # "default", "kaiming" or "xavier": weights re-initialised after building
    dropout: float = in_range(0, 1, 0.0, hi_open=True)  # before the classifier head (cnn_small)

    def validate(self) -> None:
        """Raises ValueError naming an unknown ``model.name``, ``model.norm`` or ``model.init``."""
        from shared.models.convnet import INITS, NORMS

        choose("model.name", self.name, sorted(MODELS))
        choose("model.norm", self.norm, NORMS)
        choose("model.init", self.init, INITS)


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
