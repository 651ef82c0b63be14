"""Character-level text data: a char tokenizer, a contiguous train/val split, and (x, y) blocks.

A language model learns ``p(token_{t+1} | tokens_{<=t})``: for a block ``x = data[i : i+T]`` the
targets are the same text shifted by one, ``y = data[i+1 : i+T+1]``, so one (B, T) batch holds B·T
next-token predictions. Batches are drawn at random offsets from a generator seeded by
``(seed, step)``, which makes any step's batch reproducible without saving a sampler state.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from shared.atomic import atomic_write_text
from shared.data.fetch import prepare
from shared.data.registry import get_spec


class CharTokenizer:
    """Maps each distinct character of a text to an id (sorted order) and back.

    Raises:
        ValueError: the text is empty, or :meth:`encode` meets a character outside the vocabulary.
    """

    def __init__(self, chars: str) -> None:
        if not chars:
            raise ValueError("a CharTokenizer needs a non-empty vocabulary (was the text empty?)")
        self.chars = "".join(sorted(set(chars)))
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(text)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError as e:
            raise ValueError(f"character {e.args[0]!r} is not in the tokenizer's {self.vocab_size}-character "
                             "vocabulary (it was built from the training text)") from None

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        return "".join(self.chars[i] for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids))

    def save(self, path: str | Path) -> None:
        atomic_write_text(Path(path), json.dumps({"type": "char", "chars": self.chars}, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> CharTokenizer:
        return cls(json.loads(Path(path).read_text())["chars"])


def load_text(name: str = "tiny_shakespeare", root: Path | None = None) -> str:
    """The text of a single-file registered dataset, fetched and checksum-verified first.

    Raises:
        KeyError: unknown dataset; DatasetError: missing or corrupt file (see :func:`shared.data.prepare`).
    """
    spec = get_spec(name)
    base = prepare(spec, root)
    return (base / spec.files[0].relpath).read_text(encoding="utf-8")


def split_ids(ids: torch.Tensor, val_frac: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``1 - val_frac`` of a (N,) token stream for training, the rest for validation (nanoGPT's split).

    Raises:
        ValueError: ``val_frac`` outside (0, 1).
    """
    if not 0 < val_frac < 1:
        raise ValueError(f"data.val_frac must be in (0, 1), got {val_frac}")
    n = int(len(ids) * (1 - val_frac))
    return ids[:n], ids[n:]


class BlockDataset(Dataset):
    """Every window of a (N,) token stream: item i is ``(data[i : i+T], data[i+1 : i+T+1])``, two (T,) tensors.

    Raises:
        ValueError: the stream is shorter than ``block_size + 1`` tokens.
    """

    def __init__(self, data: torch.Tensor, block_size: int) -> None:
        if len(data) < block_size + 1:  # the same rule as random_batch
            raise ValueError(f"{len(data)} tokens are too few for model.block_size={block_size} (need block_size + 1)")
        self.data, self.block_size = data, block_size

    def __len__(self) -> int:
        return len(self.data) - self.block_size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        chunk = self.data[i:i + self.block_size + 1]
        return chunk[:-1], chunk[1:]


def random_batch(data: torch.Tensor | np.ndarray, batch_size: int, block_size: int, seed: int, step: int,
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """B windows of :class:`BlockDataset` at random offsets, a pure function of ``(seed, step)``.

    Args:
        data: (N,) token stream: an int64 tensor, or a NumPy array / memmap of any integer dtype (only the
            B·(T+1) tokens of the batch are read from it).

    Returns:
        ``x``, ``y``: (B, T) int64 on ``device``, ``y`` being ``x`` shifted by one position.

    Raises:
        ValueError: the stream is shorter than ``block_size + 1`` tokens.
    """
    if len(data) < block_size + 1:
        raise ValueError(f"{len(data)} tokens are too few for model.block_size={block_size} (need block_size + 1)")
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    offsets = torch.randint(len(data) - block_size, (batch_size,), generator=g)
    idx = offsets[:, None] + torch.arange(block_size + 1)[None, :]  # (B, T+1)
    chunk = torch.from_numpy(data[idx.numpy()].astype(np.int64)) if isinstance(data, np.ndarray) else data[idx]
    x, y = chunk[:, :-1], chunk[:, 1:]
    if torch.device(device).type == "cuda":
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)
