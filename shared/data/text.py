"""Character-level text data: a char tokenizer, a contiguous train/val split, and (x, y) blocks.

A language model learns ``p(token_{t+1} | tokens_{<=t})``: for a block ``x = data[i : i+T]`` the
targets are the same text shifted by one, ``y = data[i+1 : i+T+1]``, so one (B, T) batch holds B·T
next-token predictions. Random blocks for training are drawn by :func:`shared.data.sampling.random_batch`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import torch
from torch.utils.data import Dataset

from shared.atomic import atomic_write_text
from shared.config import ConfigError
from shared.data.corpus import read_text
from shared.data.fetch import prepare
from shared.data.registry import get_spec
from shared.data.sampling import check_stream_length
from shared.data.tokenizer import plain_chat_template


class CharTokenizer:
    """Maps each distinct character of a text to an id (sorted order) and back. Satisfies
    :class:`shared.data.tokenizer.Tokenizer` (no special tokens; ``sha256`` hashes the vocabulary).

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

    bos_id = eos_id = pad_id = None  # a char vocabulary has no special tokens

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.chars.encode()).hexdigest()

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return plain_chat_template(messages, add_generation_prompt)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError as e:
            raise ValueError(f"character {e.args[0]!r} is not in the tokenizer's {self.vocab_size}-character "
                             "vocabulary (it was built from the training text)") from None

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        return "".join(self.chars[int(i)] for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids))

    def save(self, path: str | Path) -> None:
        atomic_write_text(Path(path), json.dumps({"type": "char", "chars": self.chars}, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> CharTokenizer:
        return cls(json.loads(Path(path).read_text())["chars"])


def load_text(name: str = "tiny_shakespeare", root: Path | None = None) -> str:
    """The text of a single-file registered dataset, fetched and checksum-verified first.

    Raises:
        KeyError: unknown dataset; DatasetError: missing or corrupt file (see :func:`shared.data.prepare`), or one
            that is not UTF-8 (``CorpusError``).
    """
    spec = get_spec(name)
    base = prepare(spec, root)
    return read_text(base / spec.files[0].relpath)


def split_ids(ids: torch.Tensor, val_frac: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``1 - val_frac`` of a (N,) token stream for training, the rest for validation (nanoGPT's split).

    Raises:
        ConfigError: ``val_frac`` outside (0, 1) (a ``ValueError``).
    """
    if not 0 < val_frac < 1:
        raise ConfigError(f"data.val_frac={val_frac}: must be in (0, 1). Fix: set data.val_frac to the share of the "
                          "text held out for validation, e.g. 0.1")
    n = int(len(ids) * (1 - val_frac))
    return ids[:n], ids[n:]


class BlockDataset(Dataset):
    """Every window of a (N,) token stream: item i is ``(data[i : i+T], data[i+1 : i+T+1])``, two (T,) tensors.

    Raises:
        TooFewTokensError: the stream is shorter than ``block_size + 1`` tokens (a ``DatasetError`` and a
            ``ValueError``).
    """

    def __init__(self, data: torch.Tensor, block_size: int, what: str = "the token stream") -> None:
        check_stream_length(len(data), block_size, what)  # the same rule as random_batch
        self.data, self.block_size = data, block_size

    def __len__(self) -> int:
        return len(self.data) - self.block_size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        chunk = self.data[i:i + self.block_size + 1]
        return chunk[:-1], chunk[1:]
