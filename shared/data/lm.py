"""LM data: corpus -> BPE tokenizer -> packed token memmaps, each stage skipped when its verified output exists.

:func:`prepare_lm_data` is what a week calls (week 5's pipeline, week 6's data versions, a week that evaluates a
trained model); ``namespace`` (the week) names where the outputs land, so weeks never share a folder by accident:

- ``models/<namespace>/tokenizers/<corpus>-v<vocab>-<key>.bpe.json`` (``$AIFS_MODELS_ROOT``): the tokenizer, trained
  on the training documents only: the byte-level BPE written by hand (:mod:`shared.data.bpe`, ``data.tokenizer=bpe``)
  or its library reference, sentencepiece (:mod:`shared.data.spm_tokenizer`, ``data.tokenizer=sentencepiece``,
  a ``.model`` file); the key hashes everything it depends on (the kind, corpus, split, vocabulary, sample size);
- ``runs/<namespace>/data/<corpus>-<tokenizer sha>-<key>/{train,val}.{bin,json}`` (``$AIFS_RUNS_ROOT``): the packed
  streams, checked against their metadata and the tokenizer before reuse.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shared.config import config_hash
from shared.data.bpe import BPETokenizer, train_bpe
from shared.data.corpus import Corpus, CorpusConfig, load_corpus
from shared.data.pack import (
    TokenFileError,
    TokenFileMeta,
    open_token_file,
    pack_documents,
    padding_ratio,
    write_token_file,
)
from shared.data.spm_tokenizer import SentencePieceTokenizer, train_sentencepiece
from shared.data.tokenizer import BPE_SUFFIX, TokenizerError
from shared.paths import models_root, runs_root

# Strings every tokenizer must round-trip exactly (whitespace runs, CRLF, unicode, control characters).
EDGE_CASES = ["", " ", "  two  spaces  ", "\n\nblank lines\n\n", "tab\tand\r\nCRLF", "unicode: é ✓ 日本語 🙂",
              "digits 1234567890", "\x00 control"]
TOKENIZERS = {"bpe": (BPETokenizer, BPE_SUFFIX), "sentencepiece": (SentencePieceTokenizer, ".model")}  # kind -> file
LMTokenizer = BPETokenizer | SentencePieceTokenizer


@dataclass
class LMDataConfig(CorpusConfig):
    """The corpus (see :class:`shared.data.corpus.CorpusConfig`), the tokenizer trained on its training documents,
    and the model vocabulary derived from it."""

    tokenizer: str = "bpe"  # "bpe" (byte-level, written by hand) or "sentencepiece" (the library reference)
    vocab_size: int = 4096  # BPE vocabulary, including the 256 bytes and the specials (3 for bpe, 4 for sentencepiece)
    tokenizer_max_lines: int = 2_000_000  # training lines sampled for the tokenizer, seeded (bpe: whole documents)
    pad_vocab_to: int = 64  # the model's vocab_size is rounded up to a multiple of this (GPU-friendly matmuls)


@dataclass
class TokenizerStage:
    """The tokenizer stage's output and its measurements on the val documents."""

    tokenizer: LMTokenizer
    path: Path
    skipped: bool  # loaded from disk instead of trained
    seconds: float
    chars_per_token: float  # on the val documents
    roundtrip_ok: int  # val documents with decode(encode(x)) == x
    roundtrip_n: int
    edge_cases_ok: bool


@dataclass
class SplitStats:
    """One packed split."""

    tokens: int
    documents: int
    tokens_before: int  # sum over documents of len(encode(doc)) + 2, counted before concatenation
    bos_count: int  # BOS tokens found in the written stream (one per document)
    naive_padding: float  # padding share with one padded row per document at block_size
    utf8_bytes: int  # bytes of the documents' text (for bits per byte)


@dataclass
class PackStage:
    """The pack stage's output folder and its per-split counts."""

    dir: Path
    skipped: bool  # every split verified and reused
    seconds: float
    splits: dict[str, SplitStats] = field(default_factory=dict)


@dataclass
class LMData:
    """Everything a pre-training run reads: the corpus, the tokenizer, the packed streams (memmaps, verified)."""

    corpus: Corpus
    tokenizer: TokenizerStage
    packed: PackStage
    train: np.memmap  # (N_train,) token ids
    val: np.memmap  # (N_val,)
    vocab_size: int  # the tokenizer's vocabulary, padded to a multiple of pad_vocab_to (the model's vocab_size)
    corpus_seconds: float = 0.0


def check_tokenizer_kind(data: LMDataConfig) -> None:
    """Raises TokenizerError, naming ``data.tokenizer`` and the choices, unless it is one of :data:`TOKENIZERS`."""
    if data.tokenizer not in TOKENIZERS:
        raise TokenizerError(f"data.tokenizer={data.tokenizer!r} is not a tokenizer kind: set it to one of "
                             f"{', '.join(TOKENIZERS)}")


def tokenizer_key(data: LMDataConfig) -> str:
    """Hash of everything the tokenizer depends on: its kind, the corpus, its split, the vocabulary and sample size."""
    check_tokenizer_kind(data)
    return config_hash({"tokenizer": data.tokenizer, "corpus": data.corpus, "separator": data.separator,
                        "val_frac": data.val_frac, "split_seed": data.split_seed, "vocab_size": data.vocab_size,
                        "lines": data.tokenizer_max_lines}, n=12)


def padded_vocab_size(vocab_size: int, multiple: int) -> int:
    """``vocab_size`` rounded up to a multiple of ``multiple`` (the extra ids are never produced by the tokenizer)."""
    return multiple * math.ceil(vocab_size / multiple)


def tokenizer_stage(cfg: LMDataConfig, corpus: Corpus, namespace: str, roundtrip_docs: int = 1000) -> TokenizerStage:
    """Train the ``data.tokenizer`` BPE on the training documents (or load the one trained before) and measure it
    on val.

    Raises:
        TokenizerError: an unknown ``data.tokenizer``, or a ``data.vocab_size`` the text cannot fill.
    """
    t0 = time.perf_counter()
    key = tokenizer_key(cfg)  # checks data.tokenizer first
    cls, suffix = TOKENIZERS[cfg.tokenizer]
    path = models_root() / namespace / "tokenizers" / f"{corpus.name}-v{cfg.vocab_size}-{key}{suffix}"
    skipped = False
    try:
        tok, skipped = cls.load(path), True
    except TokenizerError:
        if cfg.tokenizer == "bpe":
            tok = train_bpe(corpus.train, cfg.vocab_size, max_lines=cfg.tokenizer_max_lines)
        else:
            tok = train_sentencepiece(corpus.train, cfg.vocab_size, max_sentences=cfg.tokenizer_max_lines)
        tok.save(path)
    docs = corpus.val[:roundtrip_docs]
    ok = sum(tok.decode(ids) == d for ids, d in zip(tok.encode_batch(docs), docs, strict=True))
    edge = all(tok.decode(tok.encode(s)) == s for s in EDGE_CASES)
    return TokenizerStage(tok, path, skipped, time.perf_counter() - t0, tok.chars_per_token(corpus.val), ok, len(docs),
                          edge)


def pack_stage(cfg: LMDataConfig, corpus: Corpus, tok: LMTokenizer, namespace: str, block_size: int) -> PackStage:
    """Write ``train.bin`` and ``val.bin`` (or keep the ones that verify against this tokenizer); ``block_size``
    only sizes the naive-padding comparison."""
    t0 = time.perf_counter()
    out_dir = runs_root() / namespace / "data" / f"{corpus.name}-{tok.sha256[:12]}-{tokenizer_key(cfg)}"
    skipped, stats = True, {}
    for split, docs in (("train", corpus.train), ("val", corpus.val)):
        path = out_dir / f"{split}.bin"
        try:
            stream, meta = open_token_file(path, tok.sha256)
            before = meta.tokens  # verified by size against the metadata written at packing time
        except TokenFileError:
            skipped = False
            packed, lengths = pack_documents(docs, tok)
            before = int(lengths.sum())
            write_token_file(path, packed, TokenFileMeta(len(packed), len(docs), str(packed.dtype), tok.vocab_size,
                                                         tok.sha256, tok.bos_id, tok.eos_id))
            stream, meta = open_token_file(path, tok.sha256)
        starts = np.flatnonzero(stream == tok.bos_id)  # BOS only ever starts a document: this re-reads the file
        lengths = np.diff(np.append(starts, len(stream)))
        stats[split] = SplitStats(meta.tokens, meta.documents, before, len(starts),
                                  padding_ratio(lengths, block_size), sum(len(d.encode()) for d in docs))
    return PackStage(out_dir, skipped, time.perf_counter() - t0, stats)


def open_streams(packed: PackStage, tokenizer_sha256: str) -> tuple[np.memmap, np.memmap]:
    """The packed train and val streams of ``packed``, each checked against its metadata and the tokenizer.

    Raises:
        TokenFileError: a file is missing, truncated, or was packed with another tokenizer.
    """
    return (open_token_file(packed.dir / "train.bin", tokenizer_sha256)[0],
            open_token_file(packed.dir / "val.bin", tokenizer_sha256)[0])


def prepare_lm_data(cfg: LMDataConfig, namespace: str, block_size: int, roundtrip_docs: int = 1000) -> LMData:
    """Corpus -> tokenizer -> packed streams for ``namespace`` (each stage reused when its output verifies).

    Raises:
        DatasetError: the corpus cannot be fetched, is empty or cannot be split (see :mod:`shared.data.corpus`).
        TokenizerError: the tokenizer cannot be trained.
        TokenFileError: a packed file cannot be written or read back.
    """
    t0 = time.perf_counter()
    corpus = load_corpus(cfg)
    corpus_s = time.perf_counter() - t0
    tok = tokenizer_stage(cfg, corpus, namespace, roundtrip_docs)
    packed = pack_stage(cfg, corpus, tok.tokenizer, namespace, block_size)
    train, val = open_streams(packed, tok.tokenizer.sha256)
    return LMData(corpus, tok, packed, train, val, padded_vocab_size(tok.tokenizer.vocab_size, cfg.pad_vocab_to),
                  corpus_s)
