"""CIFAR-10 on top of the verified cache: fixed train/val split, per-channel normalisation, device augmentation.

The python-version pickles are read directly (not through ``torchvision.datasets.CIFAR10``, which
only accepts the original release's md5s, while the mirror holds the same images in another order;
:mod:`shared.data.fetch` has verified the bytes either way). The 60k images (184 MB as uint8) fit in
memory, so they are kept as tensors and batched by indexing; augmentation runs on whole batches on
the training device (:func:`random_crop_flip`), so the input pipeline never starves a GPU.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from shared.config import at_least
from shared.data.fetch import DatasetError, prepare
from shared.data.registry import DatasetSpec, get_spec
from shared.data.sampling import train_val_split

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"


@dataclass
class CIFARConfig:
    """How CIFAR-10 is split, batched and augmented."""

    dataset: str = "cifar10"  # registry name
    root: str = ""  # dataset cache ("" = datasets/raw, or $AIFS_DATA_ROOT)
    val_size: int = at_least(1, 5000)  # images held out of the 50k training set -> 45k train / 5k val
    split_seed: int = at_least(0, 0)  # fixes the train/val split for every training seed
    train_subset: int = at_least(0, 0)  # first N training images only (0 = all); for CPU and smoke runs
    test_subset: int = at_least(0, 0)  # first N test images only (0 = all 10k)
    batch_size: int = at_least(1, 128)  # training micro batch
    eval_batch_size: int = at_least(1, 1000)  # evaluation batch (does not change the metrics)
    augment: bool = True  # random crop (4-pixel padding) + horizontal flip on training batches


@dataclass
class CIFARSplits:
    """Normalised splits: ``x`` float32 (N, 3, 32, 32), ``y`` int64 (N,)."""

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    mean: tuple[float, float, float]  # per-channel mean of the training split, [0, 1] units
    std: tuple[float, float, float]  # per-channel std of the training split, [0, 1] units
    classes: tuple[str, ...] = CLASSES


def read_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One pickled batch -> uint8 images (N, 3, 32, 32) and int64 labels (N,).

    Raises:
        DatasetError: the file is not a CIFAR-10 batch (the message names it).
    """
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")  # noqa: S301 (checksum-verified file from the registry)
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, KeyError, EOFError, ValueError) as e:
        raise DatasetError(f"{path} is not a readable CIFAR-10 batch ({e}); delete it and run `make data`") from e
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DatasetError(f"{path}: expected data (N, 3072) and N labels, got {data.shape} and {len(labels)}")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels)


def load_raw(spec: DatasetSpec | None = None, root: Path | None = None):
    """Fetch, verify and read CIFAR-10: uint8 (50000, 3, 32, 32), labels (50000,), then the same for test."""
    spec = spec or get_spec("cifar10")
    root = prepare(spec, root)
    folder = root / Path(spec.files[0].relpath).parent
    train = [read_batch(folder / name) for name in TRAIN_FILES]
    x_test, y_test = read_batch(folder / TEST_FILE)
    return torch.cat([x for x, _ in train]), torch.cat([y for _, y in train]), x_test, y_test


def load_cifar10(cfg: CIFARConfig, spec: DatasetSpec | None = None) -> CIFARSplits:
    """Build the train/val/test splits described by ``cfg`` (normalised with training-split statistics).

    Raises:
        ValueError: ``val_size`` leaves no training images.
    """
    x_all, y_all, x_test, y_test = load_raw(spec or get_spec(cfg.dataset), Path(cfg.root) if cfg.root else None)
    train_idx, val_idx = train_val_split(len(x_all), cfg.val_size, cfg.split_seed, cfg.train_subset)
    if cfg.test_subset:
        x_test, y_test = x_test[: cfg.test_subset], y_test[: cfg.test_subset]
    pixels = x_all[train_idx].float().div_(255)
    mean = pixels.mean(dim=(0, 2, 3))  # (3,)
    std = pixels.std(dim=(0, 2, 3))  # (3,)
    del pixels

    def norm(x: torch.Tensor) -> torch.Tensor:
        return x.float().div_(255).sub_(mean.view(1, 3, 1, 1)).div_(std.view(1, 3, 1, 1))

    return CIFARSplits(
        train=TensorDataset(norm(x_all[train_idx]), y_all[train_idx]),
        val=TensorDataset(norm(x_all[val_idx]), y_all[val_idx]),
        test=TensorDataset(norm(x_test), y_test),
        mean=tuple(mean.tolist()),
        std=tuple(std.tolist()),
    )


def random_crop_flip(
    x: torch.Tensor, padding: int = 4, p_crop: float = 1.0, p_flip: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Per-image random crop (after zero padding) and horizontal flip of a batch, on ``x``'s device.

    The standard CIFAR augmentation (He et al. 2016, https://arxiv.org/abs/1512.03385, sec. 4.2),
    done for a whole batch with one gather instead of image by image.

    Args:
        x: (B, C, H, W) images.
        padding: pixels of zero padding on each side before cropping back to (H, W).
        p_crop, p_flip: probability that an image is shifted / flipped (0 and 0 give ``x`` back).
        generator: for reproducible draws (must live on ``x``'s device).

    Returns:
        A new (B, C, H, W) tensor of ``x``'s dtype.
    """
    b, c, h, w = x.shape
    dev = x.device
    out = x
    if p_crop > 0 and padding > 0:
        shift = torch.randint(0, 2 * padding + 1, (b, 2), device=dev, generator=generator)
        keep = torch.rand(b, device=dev, generator=generator) >= p_crop
        shift[keep] = padding  # the centre crop is the identity
        padded = F.pad(x, (padding, padding, padding, padding))  # (B, C, H+2p, W+2p)
        rows = shift[:, 0, None] + torch.arange(h, device=dev)  # (B, H)
        cols = shift[:, 1, None] + torch.arange(w, device=dev)  # (B, W)
        bi = torch.arange(b, device=dev)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (B, C, H, W)
    if p_flip > 0:
        flip = torch.rand(b, device=dev, generator=generator) < p_flip
        out = torch.where(flip[:, None, None, None], out.flip(3), out)
    return out.contiguous()
