"""Tiny, offline stand-ins used by tests and debug runs: a fake MNIST with real IDX files.

The fake dataset goes through exactly the same code as the real one (registry spec with
checksums, verified fetch, gzip'd IDX parsed by torchvision), only smaller and learnable in a
few steps: each class lights a different 4x4 patch on top of uniform noise.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np

from shared.data.registry import DatasetSpec, FileSpec


def _idx_bytes(array: np.ndarray) -> bytes:
    """IDX format: magic (0, 0, dtype 0x08 = uint8, ndim) then big-endian int32 dims, then data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def fake_mnist_arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (n, 28, 28) uint8 and labels (n,) uint8 with class-dependent patches."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    images = rng.integers(0, 120, size=(n, 28, 28)).astype(np.uint8)
    for i, c in enumerate(labels):
        r, col = 2 + 6 * (c // 4), 2 + 6 * (c % 4)
        images[i, r : r + 4, col : col + 4] = 255
    return images, labels


def write_fake_mnist(mirror: Path, n_train: int = 600, n_test: int = 200, seed: int = 0) -> DatasetSpec:
    """Write the four gzip'd IDX files under ``mirror/fake_mnist/MNIST/raw`` and return their spec.

    The spec has the right checksums and no URLs, so it can be served from the mirror only.
    """
    raw = Path(mirror) / "fake_mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    files = []
    for split, n, s in (("train", n_train, seed), ("t10k", n_test, seed + 1)):
        images, labels = fake_mnist_arrays(n, s)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{split}-{kind}-ubyte.gz"
            data = gzip.compress(_idx_bytes(arr), mtime=0)
            (raw / name).write_bytes(data)
            files.append(FileSpec(f"fake_mnist/MNIST/raw/{name}", hashlib.sha256(data).hexdigest(), len(data)))
    return DatasetSpec("fake_mnist", tuple(files), license="generated", description="fake MNIST for tests")
