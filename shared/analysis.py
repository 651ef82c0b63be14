"""Error analysis for classifiers: predictions, the confusion matrix, confusion pairs, the fit signal of a pair,
and their plots."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

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


def confusion_pairs(cm: torch.Tensor, classes: Sequence[str], top: int | None = 10) -> pd.DataFrame:
    """The most frequent off-diagonal (true, predicted) pairs with counts and their share of all errors
    (``top=None``: every pair with at least one error)."""
    k = cm.shape[0]
    errors = int(cm.sum() - cm.trace())
    rows = [
        {"true": classes[i], "predicted": classes[j], "count": int(cm[i, j]),
         "share of errors": int(cm[i, j]) / max(errors, 1), "true-class error rate": int(cm[i, j]) / max(int(cm[i].sum()), 1)}
        for i in range(k) for j in range(k) if i != j and cm[i, j] > 0
    ]
    df = pd.DataFrame(rows, columns=["true", "predicted", "count", "share of errors", "true-class error rate"])
    df = df.sort_values("count", ascending=False, kind="stable")
    return (df if top is None else df.head(top)).reset_index(drop=True)


def rate_gap_z(p1: float, n1: float, p2: float, n2: float) -> float:
    """Pooled two-proportion z statistic of the rates ``p1 - p2`` measured on ``n1`` and ``n2`` items
    (``n1 = inf``: ``p1`` is taken as exact). 0 when it is undefined (both rates 0 or both 1, an empty side)."""
    if n1 <= 0 or n2 <= 0:
        return 0.0
    exact = math.isinf(n1)
    pooled = p1 if exact else (p1 * n1 + p2 * n2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * ((0.0 if exact else 1 / n1) + 1 / n2))
    return (p1 - p2) / se if se > 0 else 0.0


@dataclass(frozen=True)
class PairSignal:
    """What one (true, predicted) confusion says about fitting, from the same pair on training images.

    ``kind``: ``"overfitting"`` when the test rate is above the training rate by ``z >= z_min`` (the model
    separates these images where it trained, not elsewhere); ``"underfitting"`` when it is not, and at least
    ``min_train`` training images are confused the same way (the model has not fitted them, or the classes
    overlap); ``""`` (no signal) when neither holds: too few errors on either side to tell.
    """

    kind: str
    test_rate: float  # share of the true class's test images predicted as the other class
    train_rate: float  # the same on (un-augmented) training images
    train_errors: int
    z: float  # two-proportion z of test_rate - train_rate

    def text(self) -> str:
        """The table cell: the signal and the numbers it was read from."""
        rates = f"{self.train_rate:.1%} on training images vs {self.test_rate:.1%} on test, z = {self.z:.1f}"
        if self.kind == "overfitting":
            return f"overfitting: separated on training images but not on test ({rates})"
        if self.kind == "underfitting":
            return f"underfitting: confused on training images too ({self.train_errors} images; {rates})"
        return f"no signal: too few errors to tell ({rates})"


def pair_signal(test_rate: float, test_total: float, train_errors: int, train_total: int,
                z_min: float = 2.0, min_train: int = 5) -> PairSignal:
    """The fit signal of one confusion pair (see :class:`PairSignal`); ``test_total = inf`` takes ``test_rate``
    as exact."""
    train_rate = train_errors / max(train_total, 1)
    z = rate_gap_z(test_rate, test_total, train_rate, train_total)
    kind = "overfitting" if z >= z_min else "underfitting" if train_errors >= min_train else ""
    return PairSignal(kind, test_rate, train_rate, train_errors, z)


def confusion_fit_signals(cm_test: torch.Tensor, cm_train: torch.Tensor, classes: Sequence[str],
                          z_min: float = 2.0, min_train: int = 5) -> pd.DataFrame:
    """Every test confusion pair (:func:`confusion_pairs`) with its training-image rate and :func:`pair_signal`:
    extra columns ``train rate``, ``z``, ``signal`` (overfitting / underfitting / "") and ``fit signal`` (text)."""
    pairs = confusion_pairs(cm_test, classes, top=None)
    sig = []
    for p in pairs.itertuples(index=False):
        i, j = classes.index(p.true), classes.index(p.predicted)
        sig.append(pair_signal(int(cm_test[i, j]) / int(cm_test[i].sum()), int(cm_test[i].sum()), int(cm_train[i, j]),
                               int(cm_train[i].sum()), z_min, min_train))
    return pairs.assign(**{"train rate": [s.train_rate for s in sig], "z": [s.z for s in sig],
                           "signal": [s.kind for s in sig], "fit signal": [s.text() for s in sig]})


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
