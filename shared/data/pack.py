"""Packing: every document as BOS + tokens + EOS, concatenated into one stream, stored as a memmap.

Concatenate-and-chunk packing wastes nothing: a (B, T) block is cut anywhere in the stream, and a block may
span the end of one document and the start of the next (the EOS/BOS pair tells the model where). The
alternative, one padded row per document, wastes ``padding_ratio`` of every batch. The stream is written as
raw ``uint16`` (``uint32`` when the vocabulary needs it) with a JSON file beside it recording what it holds, so
a reader can check it was made by the same tokenizer and is complete.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from shared.atomic import atomic_path, atomic_write_text
from shared.data.bpe import BPETokenizer
from shared.data.fetch import DatasetError


class TokenFileError(DatasetError):
    """A packed token file is missing, truncated, or was made by another tokenizer."""


@dataclass
class TokenFileMeta:
    """What ``<name>.json`` records about ``<name>.bin``."""

    tokens: int  # length of the stream
    documents: int  # documents packed into it
    dtype: str  # "uint16" or "uint32"
    vocab_size: int
    tokenizer_sha256: str  # hash of the tokenizer model file that produced it
    bos_id: int
    eos_id: int


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id: uint16 up to 65,536 ids, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def pack_documents(docs: Sequence[str], tok: BPETokenizer, batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The packed stream ``[BOS, doc0..., EOS, BOS, doc1..., EOS, ...]`` and each document's packed length.

    Returns:
        ``stream`` (N,) in :func:`token_dtype`, and ``lengths`` (D,) int64 with ``lengths.sum() == N``.
    """
    dtype = token_dtype(tok.vocab_size)
    parts, lengths = [], []
    for i in range(0, len(docs), batch):
        for ids in tok.encode_batch(list(docs[i:i + batch])):
            parts.append(np.asarray([tok.bos_id, *ids, tok.eos_id], dtype=dtype))
            lengths.append(len(ids) + 2)
    stream = np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
    return stream, np.asarray(lengths, dtype=np.int64)


def padding_ratio(lengths: np.ndarray, block_size: int) -> float:
    """Share of padding if every document got its own rows of ``block_size`` (a long one split over several).

    The concatenate-and-chunk packer's ratio is 0 by construction; this is what it saves.
    """
    rows = np.ceil(lengths / block_size)
    return float(1.0 - lengths.sum() / max(1.0, (rows * block_size).sum()))


def write_token_file(path: str | Path, stream: np.ndarray, meta: TokenFileMeta) -> Path:
    """Atomically write ``path`` (``.bin``, raw array) and its ``.json`` metadata (written last: a ``.bin``
    without its ``.json`` is an incomplete write)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        stream.tofile(tmp)
    atomic_write_text(path.with_suffix(".json"), json.dumps(asdict(meta), indent=2) + "\n")
    return path


def open_token_file(path: str | Path, tokenizer_sha256: str | None = None) -> tuple[np.memmap, TokenFileMeta]:
    """Memory-map a packed file after checking it against its metadata (and the tokenizer, when given).

    Raises:
        TokenFileError: the file or its ``.json`` is missing, its size does not match the token count, or it
            was packed with another tokenizer (the message says to re-run the pack stage).
    """
    path = Path(path)
    meta_file = path.with_suffix(".json")
    if not path.is_file() or not meta_file.is_file():
        raise TokenFileError(f"{path} (or its {meta_file.name}) is missing: run the pack stage")
    meta = TokenFileMeta(**json.loads(meta_file.read_text()))
    expected = meta.tokens * np.dtype(meta.dtype).itemsize
    if path.stat().st_size != expected:
        raise TokenFileError(f"{path} has {path.stat().st_size:,} bytes, its metadata says {expected:,} "
                             f"({meta.tokens:,} {meta.dtype} tokens): the file is truncated or corrupt; re-run the pack stage")
    if tokenizer_sha256 is not None and meta.tokenizer_sha256 != tokenizer_sha256:
        raise TokenFileError(f"{path} was packed with tokenizer {meta.tokenizer_sha256[:12]}, not with the current "
                             f"{tokenizer_sha256[:12]}: re-run the pack stage")
    return np.memmap(path, dtype=meta.dtype, mode="r", shape=(meta.tokens,)), meta

