"""Packing: every document as BOS + tokens + EOS, concatenated into one stream, stored as a memmap.

Concatenate-and-chunk packing wastes nothing: a (B, T) block is cut anywhere in the stream, and a block may
span the end of one document and the start of the next (the EOS/BOS pair tells the model where). The
alternative, one padded row per document, wastes ``padding_ratio`` of every batch. The stream is written as
raw ``uint16`` (``uint32`` when the vocabulary needs it) with a JSON file beside it recording what it holds, so
a reader can check it was made by the same tokenizer, is complete, and still holds the bytes that were written (their
sha256, checked once per process: a rotted or edited token file is never trained on).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from shared.atomic import atomic_path, atomic_write_text
from shared.data.fetch import DatasetError, sha256sum
from shared.data.tokenizer import Tokenizer


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
    sha256: str = ""  # of the .bin's bytes, recorded by write_token_file ("" in files written before it was)


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id: uint16 up to 65,536 ids, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def pack_documents(docs: Sequence[str], tok: Tokenizer, batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
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


_VERIFIED: dict[tuple[str, int, int, int], str] = {}  # (path, inode, size, mtime_ns) -> sha256 checked this process


def _file_key(path: Path) -> tuple[str, int, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns


def write_token_file(path: str | Path, stream: np.ndarray, meta: TokenFileMeta) -> Path:
    """Atomically write ``path`` (``.bin``, raw array) and its ``.json`` metadata with the sha256 of the bytes
    written (the ``.json`` is written last: a ``.bin`` without its ``.json`` is an incomplete write)."""
    path = Path(path)
    data = np.ascontiguousarray(stream)
    meta = replace(meta, sha256=hashlib.sha256(memoryview(data).cast("B")).hexdigest())
    with atomic_path(path) as tmp:
        data.tofile(tmp)
    atomic_write_text(path.with_suffix(".json"), json.dumps(asdict(meta), indent=2) + "\n")
    _VERIFIED[_file_key(path)] = meta.sha256
    return path


def open_token_file(path: str | Path, tokenizer_sha256: str | None = None) -> tuple[np.memmap, TokenFileMeta]:
    """Memory-map a packed file after checking it against its metadata (and the tokenizer, when given).

    Raises:
        TokenFileError: the file or its ``.json`` is missing, its size does not match the token count, its bytes
            do not match the sha256 recorded when it was written (or none was recorded), or it was packed with
            another tokenizer (the message says to re-run the pack stage).
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
    if not meta.sha256:
        raise TokenFileError(f"{meta_file} records no sha256 of {path.name} (it was packed before token files were "
                             "checksummed), so its bytes cannot be verified: re-run the pack stage")
    key = _file_key(path)
    if _VERIFIED.get(key) != meta.sha256:  # hashed once per process (a 1 GB file takes about a second)
        if (digest := sha256sum(path)) != meta.sha256:
            raise TokenFileError(f"{path} has sha256 {digest[:12]}, its metadata recorded {meta.sha256[:12]} when it "
                                 "was packed: the file is corrupt; re-run the pack stage")
        _VERIFIED[key] = digest
    return np.memmap(path, dtype=meta.dtype, mode="r", shape=(meta.tokens,)), meta



def split_documents(stream: np.ndarray, bos_id: int, eos_id: int) -> list[np.ndarray]:
    """Undo :func:`pack_documents`: cut a packed stream at its BOS/EOS frames into each document's token ids.

    Args:
        stream: (N,) packed ids ``[BOS, doc0..., EOS, BOS, doc1..., EOS, ...]`` (e.g. a memmap read back from disk).

    Returns:
        One (L_i,) array per document, the frame tokens removed.

    Raises:
        TokenFileError: the framing is broken (a stream that does not start with BOS and end with EOS, or BOS and
            EOS that do not alternate): the file was not written by the packer, or is corrupt.
    """
    stream = np.asarray(stream)
    if len(stream) == 0:
        return []
    bos, eos = np.flatnonzero(stream == bos_id), np.flatnonzero(stream == eos_id)
    if len(bos) != len(eos) or bos[0] != 0 or eos[-1] != len(stream) - 1 or np.any(bos > eos) \
            or np.any(bos[1:] != eos[:-1] + 1):
        raise TokenFileError(f"the packed stream's BOS ({len(bos):,}) and EOS ({len(eos):,}) tokens do not frame "
                             "documents one after another: the file is corrupt or was not written by the packer; "
                             "re-run the pack stage")
    return [stream[b + 1 : e] for b, e in zip(bos, eos, strict=True)]
