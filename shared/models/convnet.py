"""Convolutional image classifiers for CIFAR-sized inputs, with the normalisation and the
initialisation as explicit, swappable choices (they are what week 3's ablations vary).

* ``norm``: ``"batch"`` (BatchNorm, Ioffe & Szegedy 2015, https://arxiv.org/abs/1502.03167),
  ``"layer"`` (GroupNorm with one group = LayerNorm over (C, H, W) per image, Wu & He 2018,
  https://arxiv.org/abs/1803.08494) or ``"none"``.
* ``init``: ``"default"`` (PyTorch's), ``"kaiming"`` (He et al. 2015, https://arxiv.org/abs/1502.01852:
  normal, std = sqrt(2 / fan_in), for ReLU nets) or ``"xavier"`` (Glorot & Bengio 2010: normal,
  std = sqrt(2 / (fan_in + fan_out))).
"""

from __future__ import annotations

import torch
from torch import nn

NORMS = ("batch", "layer", "none")
INITS = ("default", "kaiming", "xavier")


def norm2d(kind: str, channels: int) -> nn.Module:
    """The normalisation layer for (B, C, H, W) activations.

    Raises:
        ValueError: unknown ``kind``.
    """
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown model.norm '{kind}'. Choose one of: {', '.join(NORMS)}")


def init_weights(model: nn.Module, scheme: str) -> nn.Module:
    """Re-initialise every conv and linear weight of ``model`` (biases to 0); returns ``model``.

    Raises:
        ValueError: unknown ``scheme``.
    """
    if scheme not in INITS:
        raise ValueError(f"unknown model.init '{scheme}'. Choose one of: {', '.join(INITS)}")
    if scheme == "default":
        return model
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            if scheme == "kaiming":
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            else:
                nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def conv_block(c_in: int, c_out: int, norm: str) -> nn.Sequential:
    """conv3x3 (no bias when a norm follows: the norm's shift replaces it) -> norm -> ReLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=norm == "none"), norm2d(norm, c_out), nn.ReLU())


class CNNSmall(nn.Module):
    """Three stages of two conv blocks, each stage followed by 2x2 max-pooling, then global average
    pooling, dropout and a linear head: (B, C, H, W) -> (B, num_classes).

    Args:
        in_channels: image channels (3 for CIFAR).
        num_classes: logits.
        width: channels of the first stage (then 2x and 4x).
        norm: see :func:`norm2d`.
        dropout: dropout probability before the head.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 32, norm: str = "batch",
                 dropout: float = 0.0) -> None:
        super().__init__()
        w = (width, 2 * width, 4 * width)
        layers: list[nn.Module] = []
        c = in_channels
        for out in w:
            layers += [conv_block(c, out, norm), conv_block(out, out, norm), nn.MaxPool2d(2)]
            c = out
        self.features = nn.Sequential(*layers)  # (B, 4w, H/8, W/8)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Residual(nn.Module):
    """``x + f(x)``: the identity shortcut of a residual block (He et al. 2016, https://arxiv.org/abs/1512.03385)."""

    def __init__(self, f: nn.Module) -> None:
        super().__init__()
        self.f = f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.f(x)


class ResNet9(nn.Module):
    """The 9-layer residual network of Page's DAWNBench CIFAR-10 entries ("How to train your ResNet",
    https://myrtle.ai/learn/how-to-train-your-resnet/): prep conv, three stages (conv-pool, the first
    and last with a two-conv residual block), global max-pool, a linear head scaled by 1/8.
    (B, C, 32, 32) -> (B, num_classes).

    Args:
        in_channels, num_classes: input channels and logits.
        width: channels of the prep layer (64 in the original; stages use 2x, 4x, 8x).
        norm: see :func:`norm2d`.
        head_scale: multiplies the logits (0.125 in the original; it tempers the early loss).
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 64, norm: str = "batch",
                 head_scale: float = 0.125) -> None:
        super().__init__()
        w1, w2, w3 = 2 * width, 4 * width, 8 * width

        def stage(c_in: int, c_out: int, residual: bool) -> nn.Sequential:
            layers = [conv_block(c_in, c_out, norm), nn.MaxPool2d(2)]
            if residual:
                layers.append(Residual(nn.Sequential(conv_block(c_out, c_out, norm), conv_block(c_out, c_out, norm))))
            return nn.Sequential(*layers)

        self.features = nn.Sequential(
            conv_block(in_channels, width, norm),  # (B, w, 32, 32)
            stage(width, w1, residual=True),  # (B, 2w, 16, 16)
            stage(w1, w2, residual=False),  # (B, 4w, 8, 8)
            stage(w2, w3, residual=True),  # (B, 8w, 4, 4)
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),  # (B, 8w)
        )
        self.head = nn.Linear(w3, num_classes, bias=False)
        self.head_scale = head_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)) * self.head_scale
