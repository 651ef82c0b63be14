"""A small convolutional classifier for 28x28 images: the week-2 workload with real compute per sample."""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """conv3x3 -> ReLU -> maxpool -> conv3x3 -> ReLU -> maxpool -> linear.

    About 1 MFLOP-MAC per 28x28 image forward with ``width=16`` (most of it in the second conv).

    Args:
        in_channels: image channels C (1 for MNIST).
        num_classes: output logits.
        width: channels of the first conv (the second has ``2 * width``).
        image_size: input height = width (must be divisible by 4).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16, image_size: int = 28) -> None:
        super().__init__()
        if image_size % 4:
            raise ValueError(f"SmallCNN needs an image size divisible by 4, got {image_size}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, w, H/2, W/2)
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 2w, H/4, W/4)
        )
        self.head = nn.Linear(2 * width * (image_size // 4) ** 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, num_classes) logits."""
        return self.head(self.features(x).flatten(1))
