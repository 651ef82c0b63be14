"""A text corpus as a list of documents: load, split on the corpus's separator, de-duplicate, split by document.

A language model's validation set must not contain its training documents, so the train/val split is
made over *documents* (shuffled with a fixed seed), never over characters in the middle of a document.
Sources: a registered text dataset (``tiny_shakespeare``; ``tinystories``, whose published train and validation
files are read as one pool of stories), or a folder of ``.txt`` files.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from shared.config import at_least, in_range
from shared.data.fetch import DatasetError, prepare
from shared.data.registry import REGISTRY, get_spec

# How each registered corpus separates its documents.
SEPARATORS = {
    "tiny_shakespeare": "\n\n",  # speeches are separated by a blank line
    "tinystories": "<|endoftext|>",  # the TinyStories release separates stories with this marker
}


class CorpusError(DatasetError):
    """The corpus is missing, empty, or cannot be split into documents."""


@dataclass
class CorpusConfig:
    """Where the text comes from and how it becomes train/val documents."""

    corpus: str = "tiny_shakespeare"  # a registered text dataset, or a folder of .txt files
    separator: str = ""  # document separator ("" = the corpus's own, see SEPARATORS; a folder: one file per document)
    val_frac: float = in_range(0, 1, 0.1, lo_open=True, hi_open=True)  # share of the documents held out for validation
    split_seed: int = at_least(0, 0)  # seed of the document shuffle before the split


@dataclass
class Corpus:
    """The documents of a corpus, split."""

    name: str
    train: list[str]
    val: list[str]
    n_duplicates: int  # exact duplicates removed before the split


def read_text(path: Path) -> str:
    """The text of a UTF-8 file.

    Raises:
        CorpusError: the file is not UTF-8 (the message names it, the first bad byte and the fix), or cannot be read.
    """
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(
            f"{path} is not UTF-8 text: byte 0x{e.object[e.start]:02x} at offset {e.start:,} ({e.reason}). Fix: "
            f"convert it to UTF-8 (e.g. `iconv -f latin1 -t utf-8 {path.name} > {path.stem}.utf8.txt`, then remove "
            "the original), or move it out of the corpus folder.") from None
    except OSError as e:
        raise CorpusError(f"cannot read corpus file {path}: {e.strerror or e}") from None


def split_text(text: str, separator: str, source: str) -> list[str]:
    """Documents of ``text`` between ``separator``s, stripped of surrounding whitespace, empty ones dropped.

    Raises:
        CorpusError: the text is empty, or is longer than 10,000 characters without a single separator
            (almost surely the wrong separator).
    """
    if not text.strip():
        raise CorpusError(f"corpus {source} is empty")
    if separator not in text and len(text) > 10_000:
        raise CorpusError(f"corpus {source} has no {separator!r} separator in {len(text):,} characters: set "
                          "data.separator to the string that separates its documents")
    return [d.strip() for d in text.split(separator) if d.strip()]


def load_documents(cfg: CorpusConfig) -> tuple[str, list[str]]:
    """The corpus's name and its documents, in file order.

    Raises:
        CorpusError: unknown corpus, a folder without ``.txt`` files, a file that is not UTF-8, an empty corpus, or a
            missing separator.
        DatasetError: a registered corpus cannot be fetched or fails its checksum.
    """
    path = Path(cfg.corpus)
    if cfg.corpus in REGISTRY:
        sep = cfg.separator or SEPARATORS.get(cfg.corpus, "\n\n")
        spec = get_spec(cfg.corpus)
        base = prepare(spec)
        docs = []
        for f in spec.files:  # several files (TinyStories' train and valid) form one pool, split below by our seed
            docs += split_text(read_text(base / f.relpath), sep, f"{cfg.corpus}: {f.relpath}")
        return cfg.corpus, docs
    if path.is_dir():
        files = sorted(path.rglob("*.txt"))
        if not files:
            raise CorpusError(f"data.corpus={cfg.corpus} is a folder without .txt files")
        docs = []
        for f in files:
            text = read_text(f)
            docs += split_text(text, cfg.separator, str(f)) if cfg.separator else ([text.strip()] if text.strip() else [])
        if not docs:
            raise CorpusError(f"corpus {cfg.corpus} is empty: its .txt files hold only whitespace")
        return path.name, docs
    known = ", ".join(sorted(n for n in REGISTRY if n in SEPARATORS))
    raise CorpusError(f"data.corpus={cfg.corpus!r} is neither a registered text corpus ({known}) nor a folder")


def dedupe(docs: list[str]) -> tuple[list[str], int]:
    """Drop exact duplicate documents, keeping the first; returns the documents and how many went."""
    out = list(dict.fromkeys(docs))  # dicts keep insertion order: the first copy stays
    return out, len(docs) - len(out)


def split_documents(docs: list[str], val_frac: float, seed: int) -> tuple[list[str], list[str]]:
    """Shuffle the documents with ``seed`` and hold out ``val_frac`` of them (at least one) for validation.

    Raises:
        CorpusError: fewer than 2 documents, or ``val_frac`` outside (0, 1).
    """
    if not 0 < val_frac < 1:
        raise CorpusError(f"data.val_frac must be in (0, 1), got {val_frac}")
    if len(docs) < 2:
        raise CorpusError(f"a train/val split needs at least 2 documents, the corpus has {len(docs)}")
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(docs) * val_frac))
    return [docs[i] for i in order[n_val:]], [docs[i] for i in order[:n_val]]


def load_corpus(cfg: CorpusConfig) -> Corpus:
    """Load, de-duplicate and split a corpus (see :func:`load_documents`, :func:`dedupe`, :func:`split_documents`)."""
    name, docs = load_documents(cfg)
    docs, n_dup = dedupe(docs)
    train, val = split_documents(docs, cfg.val_frac, cfg.split_seed)
    return Corpus(name, train, val, n_dup)
