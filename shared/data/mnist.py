"""MNIST on top of the verified cache: fixed train/val split, training-split normalisation.

The four gzip'd IDX files are fetched and verified by :mod:`shared.data.fetch` and decompressed in memory on
every load (about 0.2 s), never unpacked to disk: what is read is always the archive that was just verified, so
an unpacked copy that rotted or was edited can never be trained on. The whole dataset (70k x 784 bytes) fits in
memory, so it is kept as normalised float tensors and batched by indexing (no per-sample work).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from shared.config import at_least, choose
from shared.data.fetch import DatasetError, prepare
from shared.data.registry import DatasetSpec, get_spec
from shared.data.sampling import train_val_split


@dataclass
class MNISTConfig:
    """How MNIST is split and batched."""

    dataset: str = "mnist"  # registry name
    root: str = ""  # dataset cache folder ("" = datasets/raw, or $AIFS_DATA_ROOT)
    val_size: int = at_least(1, 5000)  # images held out of the 60k training set for validation
    split_seed: int = at_least(0, 0)  # fixes the train/val split (independent of the training seed)
    train_subset: int = at_least(0, 0)  # use only the first N training images (0 = all); for smoke runs
    batch_size: int = at_least(1, 128)  # micro batch for training
    eval_batch_size: int = at_least(1, 1000)  # batch for evaluation (does not change the metrics)
    view: str = "image"  # "image" -> (B, 1, 28, 28); "flat" -> (B, 784)

    def validate(self) -> None:
        """Raises ValueError naming an unknown ``data.view``."""
        choose("data.view", self.view, ("image", "flat"))


@dataclass
class MNISTSplits:
    """Normalised splits. ``x`` is float32 of shape (N, 1, 28, 28) or (N, 784); ``y`` int64 (N,)."""

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    mean: float  # pixel mean of the training split, in [0, 1] units
    std: float  # pixel std of the training split, in [0, 1] units
    raw_train: torch.Tensor  # uint8 (N, 28, 28) training images before normalisation


def read_idx(gz_path: Path) -> torch.Tensor:
    """A gzip'd IDX file of unsigned bytes (the MNIST release format, http://yann.lecun.com/exdb/mnist/) -> a uint8
    tensor of the shape in its header: magic ``(0, 0, 0x08, ndim)``, ``ndim`` big-endian int32 sizes, then the data.

    Raises:
        DatasetError: the file is not a gzip'd uint8 IDX file, or its data does not fill the shape it declares.
    """
    try:
        with gzip.open(gz_path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{gz_path} is not a readable gzip file ({e}); delete it and run `make data`") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{gz_path} is not a uint8 IDX file (header {raw[:4].hex()}); delete it and run `make data`")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}i", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DatasetError(f"{gz_path}: its header declares shape {shape}, its data holds {data.size:,} bytes; "
                           "delete it and run `make data`")
    return torch.from_numpy(data.reshape(shape).copy())


def _find(spec: DatasetSpec, prefix: str) -> str:
    for f in spec.files:
        if Path(f.relpath).name.startswith(prefix):
            return f.relpath
    raise DatasetError(f"dataset {spec.name} has no file named {prefix}*.gz (its files: "
                       f"{', '.join(f.relpath for f in spec.files)})")


def load_raw(spec: DatasetSpec | None = None, root: Path | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fetch, verify and read MNIST: uint8 images (N, 28, 28) and int64 labels (N,) for train, test.

    Raises:
        ChecksumError, DatasetUnavailableError: see :func:`shared.data.fetch.prepare`.
        DatasetError: a verified file is not the IDX file its name says (see :func:`read_idx`).
    """
    spec = spec or get_spec("mnist")
    root = prepare(spec, root)
    x_train, y_train, x_test, y_test = (read_idx(root / _find(spec, name)) for name in (
        "train-images", "train-labels", "t10k-images", "t10k-labels"))
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "t10k")):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DatasetError(f"dataset {spec.name}: {split} images {tuple(x.shape)} and labels {tuple(y.shape)} do "
                               "not match (expected (N, H, W) and (N,))")
    return x_train, y_train.long(), x_test, y_test.long()


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
