"""Softmax regression: the simplest classifier, one linear layer on the flattened image."""

from __future__ import annotations

import torch
from torch import nn


class SoftmaxRegression(nn.Module):
    """Multinomial logistic regression: ``logits = x.flatten(1) @ W.T + b``.

    The softmax itself lives in the loss (``F.cross_entropy`` takes logits), which is the
    numerically stable way to train it.

    Args:
        in_features: input features after flattening (784 for MNIST).
        num_classes: number of classes (10 for MNIST).
    """

    def __init__(self, in_features: int = 784, num_classes: int = 10) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) or (B, 784) -> logits (B, num_classes)."""
        return self.linear(x.flatten(1))
