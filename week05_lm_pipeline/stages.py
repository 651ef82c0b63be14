"""The pipeline's stages: tokenizer -> pack -> train -> eval. Each writes its outputs where the next one finds
them and is skipped when a verified output already exists (the tokenizer loads, the packed files match their
metadata and the tokenizer, the training run is complete), so ``make week05`` resumes instead of redoing work.

Where things land (``$AIFS_MODELS_ROOT`` = ``models/``, ``$AIFS_RUNS_ROOT`` = ``runs/``):
``models/week05/tokenizers/<corpus>-v<vocab>-<key>.model``, ``runs/week05/data/<corpus>-<tokenizer>/{train,val}.{bin,json}``,
``runs/week05/<profile>/gpt-<hash>/`` (checkpoints, metrics, result.json).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from shared.checkpoint import CheckpointError, load_checkpoint, load_model_state
from shared.config import config_hash
from shared.data.corpus import Corpus
from shared.data.pack import (
    TokenFileError,
    TokenFileMeta,
    open_token_file,
    pack_documents,
    padding_ratio,
    write_token_file,
)
from shared.data.tokenizer import BPETokenizer, TokenizerError, train_bpe
from shared.flops import mfu_peak
from shared.models.gpt import GPT, GPTConfig
from shared.paths import models_root, runs_root
from shared.profiling import peak_memory_gib, reset_peak_memory
from shared.repro import seed_everything
from shared.rundir import finish_run, start_run
from shared.tracking import MetricLogger, console
from shared.train.lm import LMResult, train_lm
from shared.train.trainer import resolve_device
from week05_lm_pipeline.config import DataConfig, Week05Config, train_run_config

WEEK = "week05"
EDGE_CASES = ["", " ", "  two  spaces  ", "\n\nblank lines\n\n", "tab\tand\r\nCRLF", "unicode: é ✓ 日本語 🙂",
              "digits 1234567890", "\x00 control"]


@dataclass
class TokenizerOut:
    tokenizer: BPETokenizer
    path: Path
    skipped: bool
    seconds: float
    chars_per_token: float  # on the val documents
    roundtrip_ok: int  # val documents with decode(encode(x)) == x
    roundtrip_n: int
    edge_cases_ok: bool


def tokenizer_key(data: DataConfig) -> str:
    """Hash of everything the tokenizer depends on: the corpus, its split, the vocabulary size and sample size."""
    return config_hash({"corpus": data.corpus, "separator": data.separator, "val_frac": data.val_frac,
                        "split_seed": data.split_seed, "vocab_size": data.vocab_size, "lines": data.tokenizer_max_lines},
                       n=12)


def tokenizer_stage(cfg: Week05Config, corpus: Corpus) -> TokenizerOut:
    """Train the BPE on the training documents (or load the one trained before) and measure it on val."""
    t0 = time.perf_counter()
    path = models_root() / WEEK / "tokenizers" / f"{corpus.name}-v{cfg.data.vocab_size}-{tokenizer_key(cfg.data)}.model"
    skipped = False
    try:
        tok, skipped = BPETokenizer.load(path), True
    except TokenizerError:
        tok = train_bpe(corpus.train, cfg.data.vocab_size, cfg.data.tokenizer_max_lines)
        tok.save(path)
    docs = corpus.val[:cfg.check.roundtrip_docs]
    ok = sum(tok.decode(ids) == d for ids, d in zip(tok.encode_batch(docs), docs, strict=True))
    edge = all(tok.decode(tok.encode(s)) == s for s in EDGE_CASES)
    return TokenizerOut(tok, path, skipped, time.perf_counter() - t0, tok.chars_per_token(corpus.val), ok, len(docs), edge)


@dataclass
class SplitStats:
    tokens: int
    documents: int
    tokens_before: int  # sum over documents of len(encode(doc)) + 2, counted before concatenation
    bos_count: int  # BOS tokens found in the written stream (one per document)
    naive_padding: float  # padding share with one padded row per document at block_size
    utf8_bytes: int  # bytes of the documents' text (for bits per byte)


@dataclass
class PackOut:
    dir: Path
    skipped: bool
    seconds: float
    splits: dict[str, SplitStats]


def pack_stage(cfg: Week05Config, corpus: Corpus, tok: BPETokenizer) -> PackOut:
    """Write ``train.bin`` and ``val.bin`` (or keep the ones that verify against this tokenizer)."""
    t0 = time.perf_counter()
    out_dir = runs_root() / WEEK / "data" / f"{corpus.name}-{tok.sha256[:12]}-{tokenizer_key(cfg.data)}"
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
        starts = np.flatnonzero(stream == tok.bos_id)  # BOS only ever starts a document
        lengths = np.diff(np.append(starts, len(stream)))
        stats[split] = SplitStats(meta.tokens, meta.documents, before, len(starts),
                                  padding_ratio(lengths, cfg.model.block_size), sum(len(d.encode()) for d in docs))
    return PackOut(out_dir, skipped, time.perf_counter() - t0, stats)


def model_config(cfg: Week05Config, tok: BPETokenizer) -> GPTConfig:
    """``cfg.model`` with the vocabulary of ``tok``, rounded up to a multiple of ``data.pad_vocab_to``."""
    m = cfg.data.pad_vocab_to
    return GPTConfig(**{**asdict(cfg.model), "vocab_size": m * math.ceil(tok.vocab_size / m)})


@dataclass
class TrainOut:
    model: GPT
    result: LMResult
    run_dir: Path
    run_id: str
    skipped: bool  # the run was already complete
    tokens_per_sec: float  # median of the logged training rows
    mfu: float | None
    mfu_source: str
    peak_mem_gib: float


def train_stage(cfg: Week05Config, profile: str, tokenizer: TokenizerOut, packed: PackOut, t_start: float) -> TrainOut:
    """Train the GPT on the packed stream (or resume / reuse the run of the same config). Sets ``cfg.model`` to
    the model actually built (its vocabulary padded, see :func:`model_config`), which later stages reuse."""
    import pandas as pd

    tok = tokenizer.tokenizer
    cfg.model = model_config(cfg, tok)
    run = start_run(WEEK, "gpt", profile, train_run_config(cfg))
    device = resolve_device(cfg.train.device)
    train_data, _ = open_token_file(packed.dir / "train.bin", tok.sha256)
    val_data, _ = open_token_file(packed.dir / "val.bin", tok.sha256)
    seed_everything(cfg.train.seed)
    model = GPT(cfg.model).to(device)
    done = (run.dir / "result.json").is_file() and (run.dir / "checkpoints" / "last.pt").is_file()
    console(f"GPT: {model.num_params():,} non-embedding parameters, vocab {cfg.model.vocab_size}, "
            f"block {cfg.model.block_size}, device {device}")
    peak, source = mfu_peak(device, cfg.train.precision)
    logger = MetricLogger(run.dir, run.run_id, cfg.train.seed)
    reset_peak_memory(device)
    meta = {"model": asdict(cfg.model), "tokenizer": str(tokenizer.path),
            "tokenizer_sha256": tok.sha256, "val_data": str(packed.dir / "val.bin")}
    result = train_lm(model, train_data, val_data, cfg.train, cfg.model.block_size, run.dir, logger,
                      meta=meta, flops_per_token=model.flops_per_token(), peak_flops=peak, t_start=t_start)
    logger.close()
    final = result.evals[-1]
    finish_run(run, cfg.train.seed, {"val_loss": final["val_loss"]}, result.train_time_s)
    rows = pd.read_csv(run.dir / "metrics.csv")
    rows = rows[rows.phase == "train"]
    return TrainOut(model, result, run.dir, run.run_id, done, float(rows.tokens_per_sec.median()),
                    float(rows.mfu.median()) if "mfu" in rows else None, source, peak_memory_gib(device))


def load_for_eval(ckpt: str | Path, tok: BPETokenizer, device: torch.device | str = "cpu",
                  state: dict | None = None) -> GPT:
    """The GPT of a week-5 checkpoint, after checking it was trained with ``tok``.

    Args:
        state: ``ckpt`` already loaded by :func:`shared.checkpoint.load_checkpoint` (it is read from disk otherwise).

    Raises:
        CheckpointError: missing/unreadable file, or its vocabulary / tokenizer differs from ``tok``'s
            (the message names both).
    """
    state = load_checkpoint(ckpt, map_location="cpu") if state is None else state
    meta = state["meta"]
    mcfg = GPTConfig(**meta["model"])
    if mcfg.vocab_size < tok.vocab_size or meta.get("tokenizer_sha256") not in (None, tok.sha256):
        raise CheckpointError(
            f"{ckpt} was trained with a {mcfg.vocab_size}-id vocabulary (tokenizer "
            f"{str(meta.get('tokenizer_sha256'))[:12]}), but the tokenizer given has {tok.vocab_size} ids "
            f"({tok.sha256[:12]}): evaluate it with the tokenizer it was trained with")
    model = GPT(mcfg)
    load_model_state(model, state, source=str(ckpt))
    return model.to(device)
