"""Error analysis for classifiers: predictions, the confusion matrix, confusion pairs, and their plots."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted and true labels over a loader of ``(x, y)``: two int64 CPU tensors (N,)."""
    was_training = model.training
    model.eval()
    preds, targets = [], []
    for x, y in loader:
        preds.append(model(x.to(device)).argmax(dim=1).cpu())
        targets.append(y.cpu())
    model.train(was_training)
    return torch.cat(preds), torch.cat(targets)


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) int64 counts; row = true class, column = predicted class (sklearn's convention)."""
    idx = target.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes**2).view(num_classes, num_classes)


def confusion_pairs(cm: torch.Tensor, classes: Sequence[str], top: int = 10) -> pd.DataFrame:
    """The most frequent off-diagonal (true, predicted) pairs with counts and their share of all errors."""
    k = cm.shape[0]
    errors = int(cm.sum() - cm.trace())
    rows = [
        {"true": classes[i], "predicted": classes[j], "count": int(cm[i, j]),
         "share of errors": int(cm[i, j]) / max(errors, 1), "true-class error rate": int(cm[i, j]) / max(int(cm[i].sum()), 1)}
        for i in range(k) for j in range(k) if i != j and cm[i, j] > 0
    ]
    df = pd.DataFrame(rows, columns=["true", "predicted", "count", "share of errors", "true-class error rate"])
    return df.sort_values("count", ascending=False, kind="stable").head(top).reset_index(drop=True)


def plot_confusion(cm: torch.Tensor, classes: Sequence[str], title: str = "Confusion matrix"):
    """A row-normalised heat map with the raw counts written in each cell; returns the figure."""
    import matplotlib.pyplot as plt

    rates = cm.float() / cm.sum(dim=1, keepdim=True).clamp_min(1)
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black")
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticklabels(classes)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    fig.tight_layout()
    return fig


def plot_error_grid(images: torch.Tensor, true: Sequence[str], pred: Sequence[str], cols: int = 8):
    """A grid of images (N, C, H, W) in [0, 1], each titled ``true -> predicted``; returns the figure."""
    import matplotlib.pyplot as plt

    n = len(images)
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            img = images[k].permute(1, 2, 0).clamp(0, 1).numpy()
            ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
            ax.set_title(f"{true[k]}\n→ {pred[k]}", fontsize=7)
    fig.tight_layout()
    return fig
