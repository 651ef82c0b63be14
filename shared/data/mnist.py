"""MNIST on top of the verified cache: fixed train/val split, training-split normalisation.

The four gzip'd IDX files are fetched and verified by :mod:`shared.data.fetch`, unpacked next to
themselves, and read by ``torchvision.datasets.MNIST``. The whole dataset (70k x 784 bytes) fits in
memory, so it is kept as normalised float tensors and batched by indexing (no per-sample work).
"""

from __future__ import annotations

import gzip
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from shared.atomic import atomic_path
from shared.data.fetch import prepare
from shared.data.registry import DatasetSpec, get_spec
from shared.data.sampling import train_val_split


@dataclass
class MNISTConfig:
    """How MNIST is split and batched."""

    dataset: str = "mnist"  # registry name
    root: str = ""  # dataset cache folder ("" = datasets/raw, or $AIFS_DATA_ROOT)
    val_size: int = 5000  # images held out of the 60k training set for validation
    split_seed: int = 0  # fixes the train/val split (independent of the training seed)
    train_subset: int = 0  # use only the first N training images (0 = all); for smoke runs
    batch_size: int = 128  # micro batch for training
    eval_batch_size: int = 1000  # batch for evaluation (does not change the metrics)
    view: str = "image"  # "image" -> (B, 1, 28, 28); "flat" -> (B, 784)


@dataclass
class MNISTSplits:
    """Normalised splits. ``x`` is float32 of shape (N, 1, 28, 28) or (N, 784); ``y`` int64 (N,)."""

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    mean: float  # pixel mean of the training split, in [0, 1] units
    std: float  # pixel std of the training split, in [0, 1] units
    raw_train: torch.Tensor  # uint8 (N, 28, 28) training images before normalisation


def _unpack(gz_path: Path) -> None:
    out = gz_path.with_suffix("")
    if out.is_file() and out.stat().st_mtime >= gz_path.stat().st_mtime:
        return
    with atomic_path(out) as tmp, gzip.open(gz_path, "rb") as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst)


def load_raw(spec: DatasetSpec | None = None, root: Path | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fetch, verify and read MNIST: uint8 images (N, 28, 28) and int64 labels (N,) for train, test.

    Raises:
        ChecksumError, DatasetUnavailableError: see :func:`shared.data.fetch.prepare`.
    """
    from torchvision.datasets import MNIST  # torchvision import costs ~1 s; only pay it here

    spec = spec or get_spec("mnist")
    root = prepare(spec, root)
    for f in spec.files:
        _unpack(root / f.relpath)
    base = root / Path(spec.files[0].relpath).parents[2]  # .../mnist (torchvision adds MNIST/raw)
    train = MNIST(str(base), train=True, download=False)
    test = MNIST(str(base), train=False, download=False)
    return train.data, train.targets.long(), test.data, test.targets.long()


def load_mnist(cfg: MNISTConfig, spec: DatasetSpec | None = None) -> MNISTSplits:
    """Build the train/val/test splits described by ``cfg``.

    The val split is a seeded random ``cfg.val_size`` of the 60k training images; the 10k test set
    is kept separate. Mean and std come from the training split only (no val/test leakage).

    Raises:
        ValueError: ``val_size`` leaves no training images, or ``view`` is unknown.
    """
    if cfg.view not in ("image", "flat"):
        raise ValueError(f"data.view must be 'image' or 'flat', got '{cfg.view}'")
    x_all, y_all, x_test, y_test = load_raw(spec or get_spec(cfg.dataset), Path(cfg.root) if cfg.root else None)
    train_idx, val_idx = train_val_split(len(x_all), cfg.val_size, cfg.split_seed, cfg.train_subset)
    raw_train = x_all[train_idx]
    pixels = raw_train.float().div_(255)
    mean, std = pixels.mean().item(), pixels.std().item()

    def norm(x: torch.Tensor) -> torch.Tensor:
        x = x.float().div_(255).sub_(mean).div_(std).unsqueeze(1)  # (N, 1, 28, 28)
        return x.flatten(1) if cfg.view == "flat" else x

    return MNISTSplits(
        train=TensorDataset(norm(raw_train), y_all[train_idx]),
        val=TensorDataset(norm(x_all[val_idx]), y_all[val_idx]),
        test=TensorDataset(norm(x_test), y_test),
        mean=mean,
        std=std,
        raw_train=raw_train,
    )


def summarize(x: torch.Tensor, y: torch.Tensor, label: str) -> dict:
    """One row of shape/dtype/range statistics for the data summary table."""
    xf = x.float()
    return {
        "tensor": label,
        "X.shape": tuple(x.shape),
        "X.dtype": str(x.dtype).replace("torch.", ""),
        "min": round(xf.min().item(), 4),
        "max": round(xf.max().item(), 4),
        "mean": round(xf.mean().item(), 4),
        "std": round(xf.std().item(), 4),
        "y.shape": tuple(y.shape),
        "y.dtype": str(y.dtype).replace("torch.", ""),
        "classes": int(y.unique().numel()),
    }
