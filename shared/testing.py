"""Tiny, offline stand-ins used by tests and debug runs: a fake MNIST with real IDX files, a fake
CIFAR-10 in the real pickle layout, and a launcher that runs a function on N local ranks the way ``torchrun`` would.

The fake dataset goes through exactly the same code as the real one (registry spec with
checksums, verified fetch, gzip'd IDX read by shared.data.mnist), only smaller and learnable in a
few steps: each class lights a different 4x4 patch on top of uniform noise.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import time
from collections.abc import Callable
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


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1 (for a test's rendezvous)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_entry(rank: int, fn: Callable[..., None], world_size: int, port: int, args: tuple) -> None:
    env = {"RANK": rank, "LOCAL_RANK": rank, "WORLD_SIZE": world_size, "LOCAL_WORLD_SIZE": world_size,
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
    os.environ.update({k: str(v) for k, v in env.items()})
    fn(rank, *args)


# Spawned ranks start a fresh interpreter each (torch import, rendezvous): seconds on an idle machine, but a loaded,
# shared one has been seen to take minutes. The default limit only catches a hang; slowness alone is no failure.
SPAWN_TIMEOUT_S = 600.0


def spawn_ranks(fn: Callable[..., None], world_size: int, args: tuple = (),
                timeout_s: float = SPAWN_TIMEOUT_S) -> list[int]:
    """Run ``fn(rank, *args)`` in ``world_size`` fresh processes with a ``torchrun``-like environment.

    ``fn`` must be importable (module level). Returns the exit codes in rank order (0 = success).
    Unlike ``torch.multiprocessing.spawn``, a failing rank does not get the others killed, so a
    test can watch what the survivors do.

    Raises:
        TimeoutError: some rank was still running after ``timeout_s`` seconds (all are killed).
    """
    import torch.multiprocessing as mp

    ctx = mp.start_processes(
        _rank_entry, args=(fn, world_size, free_port(), args), nprocs=world_size, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + timeout_s
    for p in ctx.processes:
        p.join(max(deadline - time.monotonic(), 0))
    alive = [r for r, p in enumerate(ctx.processes) if p.is_alive()]
    if alive:
        for p in ctx.processes:
            p.kill()
        raise TimeoutError(f"ranks {alive} still running after {timeout_s} s")
    return [p.exitcode for p in ctx.processes]


def write_fake_cifar(mirror: Path, n_per_batch: int = 100, n_test: int = 100, seed: int = 0) -> DatasetSpec:
    """A learnable fake CIFAR-10 (class = which colour channel is bright) in the real pickle layout,
    under ``mirror/fake_cifar10/cifar-10-batches-py``; returns its spec (mirror-only, no archive)."""
    import pickle

    folder = Path(mirror) / "fake_cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    blobs = {}
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        n = n_test if name == "test_batch" else n_per_batch
        labels = rng.integers(0, 10, size=n)
        data = rng.integers(0, 100, size=(n, 3, 32, 32)).astype(np.uint8)
        for j, c in enumerate(labels):
            data[j, c % 3, : 8 + 2 * c, :] = 255  # channel and height of a bright band encode the class
        d = {b"batch_label": f"fake batch {i}".encode(), b"labels": labels.tolist(),
             b"data": data.reshape(n, 3072), b"filenames": [f"img_{i}_{j}.png".encode() for j in range(n)]}
        blobs[name] = pickle.dumps(d, protocol=2)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    blobs["batches.meta"] = pickle.dumps({b"label_names": [c.encode() for c in names]}, protocol=2)
    files = []
    for name, blob in blobs.items():
        (folder / name).write_bytes(blob)
        files.append(FileSpec(f"fake_cifar10/cifar-10-batches-py/{name}", hashlib.sha256(blob).hexdigest(), len(blob)))
    return DatasetSpec("fake_cifar10", tuple(files), license="generated", description="fake CIFAR-10 for tests")


def write_fake_text(mirror: Path, n_chars: int = 20_000, seed: int = 0) -> DatasetSpec:
    """A small learnable text (a few short lines repeated in random order) registered as ``fake_text``,
    under ``mirror/fake_text/input.txt``: the debug corpus of the language-model tests."""
    lines = ["to be or not to be,", "that is the question.", "all the world's a stage,", "and all the men and women",
             "merely players.", "the quick brown fox jumps over the lazy dog."]
    rng = np.random.default_rng(seed)
    out, size = [], 0
    while size < n_chars:
        line = lines[rng.integers(len(lines))]
        out.append(line)
        size += len(line) + 1
    blob = ("\n".join(out) + "\n").encode()
    path = Path(mirror) / "fake_text" / "input.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    return DatasetSpec("fake_text", (FileSpec("fake_text/input.txt", hashlib.sha256(blob).hexdigest(), len(blob)),),
                       license="generated", description="fake text corpus for tests")


def mirror_has(relpath: str) -> bool:
    """Whether the dataset mirror named by ``$AIFS_DATA_MIRROR`` holds ``relpath`` (tests of real data skip otherwise)."""
    import os

    mirror = os.environ.get("AIFS_DATA_MIRROR", "")
    return bool(mirror) and (Path(mirror) / relpath).exists()


# A week's fast tests take ~30-60 s on 2 idle cores; the child gets far more, because a shared, loaded machine has
# been seen to run them several times slower. The limit only catches a hang: slowness alone must not fail a test.
ISOLATION_TIMEOUT_S = 1200.0


def run_week_tests_alone(week_pkg: str, tmp_path: Path, timeout_s: float = ISOLATION_TIMEOUT_S):
    """Copy ``shared/``, ``week_pkg`` and the project files (no other week) into ``tmp_path/repo`` and run that week's
    tests there (``-m "not slow"``) in a child pytest: a week must pass with every other week deleted, since weeks
    depend only on ``shared``. Returns the ``subprocess.CompletedProcess``. Callers mark their test
    ``@pytest.mark.timeout(ISOLATION_TIMEOUT_S + ...)`` so that pytest's own limit (pyproject) does not cut it first.

    Raises:
        AssertionError: the child would import the original checkout instead of the copy.
    """
    import shutil
    import subprocess
    import sys

    from shared.paths import REPO_ROOT

    copy = tmp_path / "repo"
    keep = {"shared", week_pkg, "conftest.py", "pyproject.toml", "Makefile", "requirements"}
    copy.mkdir()
    for item in REPO_ROOT.iterdir():
        if item.name in keep:
            dst = copy / item.name
            if item.is_dir():
                shutil.copytree(item, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(item, dst)
    assert not any(p.name.startswith("week") and p.name != week_pkg for p in copy.iterdir())
    env = {**os.environ, "PYTHONPATH": str(copy)}
    probe = subprocess.run([sys.executable, "-c", f"import shared, {week_pkg}; print(shared.__file__)"],
                           cwd=copy, env=env, capture_output=True, text=True, check=True)
    assert probe.stdout.strip().startswith(str(copy)), "the copy must be imported, not the original checkout"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
                           f"{week_pkg}/tests"], cwd=copy, env=env, capture_output=True, text=True, timeout=timeout_s)


def fake_documents(n: int, seed: int = 0) -> list[str]:
    """``n`` short English-like documents (the tokenizer and packing tests' debug corpus)."""
    words = ["the", "cat", "dog", "sat", "ran", "on", "a", "mat", "big", "small", "red", "blue", "and", "then", "it", "was", "happy", "sad", "day", "night", "tom", "lily", "saw", "park", "tree", "ball", "play", "jump", "over", "under"]
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n):
        sentences = [" ".join(rng.choice(words, size=rng.integers(4, 12))).capitalize() + "."
                     for _ in range(rng.integers(1, 5))]
        docs.append(" ".join(sentences) + ("\n" + " ".join(sentences[:1]) if rng.random() < 0.3 else ""))
    return docs


def debug_token_stream(n: int = 4000, seed: int = 0, vocab_size: int = 8):
    """The LM debug data: a (n,) int64 stream where each token is ``(previous + 1) mod vocab_size`` except
    for 10% random tokens. A model that learns the rule reaches ~0.5 nats/token; chance is ``ln(vocab_size)``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(n, dtype=torch.long)
    noise = torch.rand(n, generator=g) < 0.1
    for i in range(1, n):
        ids[i] = torch.randint(0, vocab_size, (), generator=g) if noise[i] else (ids[i - 1] + 1) % vocab_size
    return ids


DEBUG_GPT = {"vocab_size": 8, "block_size": 8, "n_layer": 1, "n_head": 2, "n_embd": 16}  # the LM debug model
