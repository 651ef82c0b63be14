"""The tokenizer bench: the hand-written byte-level BPE next to its library reference, sentencepiece.

``python -m week05_lm_pipeline.bench_tokenizer [OUT.csv] [--vocab-size 4096] [--corpus tiny_shakespeare]`` trains
both on the corpus's training documents and writes one row per tokenizer (default
``runs/week05/tokenizer_bench.csv``):

- ``train_s``: wall-clock seconds of ``train_bpe`` / ``train_sentencepiece`` (counting pre-tokens included);
- ``encode_mb_per_s``: UTF-8 megabytes of the val documents per second of ``encode_batch``, a first pass with a
  freshly trained tokenizer (the hand BPE's pre-token cache starts empty, as in the pack stage);
- ``encode_warm_mb_per_s``: the same, a second pass (every pre-token cached: the rate on a large corpus, where
  almost every word has been seen before);
- ``bytes_per_token``: UTF-8 bytes of the val documents per token (higher = a better compression);
- ``vocab_size``: ids, specials included.

Targets on 2 CPU cores for 4,096 ids on Tiny Shakespeare: hand BPE training <= 60 s, encoding >= 1 MB/s.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from shared.atomic import atomic_write_text
from shared.data.bpe import train_bpe
from shared.data.corpus import CorpusConfig, load_corpus
from shared.data.spm_tokenizer import train_sentencepiece
from shared.paths import runs_root

COLUMNS = ["tokenizer", "train_s", "encode_mb_per_s", "encode_warm_mb_per_s", "bytes_per_token", "vocab_size"]


def bench_tokenizers(train_docs: Sequence[str], val_docs: Sequence[str], vocab_size: int = 4096,
                     out: str | Path | None = None) -> pd.DataFrame:
    """Train both tokenizers on ``train_docs``, measure them on ``val_docs``; one row each (:data:`COLUMNS`),
    also written atomically to ``out`` as CSV when given.

    Raises:
        TokenizerError: ``vocab_size`` is too small for the bytes and specials, or too large for the text.
    """
    val_bytes = sum(len(d.encode("utf-8")) for d in val_docs)
    rows = []
    # the caller's heap (a whole pipeline's objects) is not the tokenizer's cost: frozen, the cyclic GC that the
    # encoders' allocations trigger does not rescan it (in the week-5 pipeline it cut the first-pass rate 5x)
    gc.collect()
    gc.freeze()
    try:
        rows = _bench_rows(train_docs, val_docs, vocab_size, val_bytes)
    finally:
        gc.unfreeze()
    df = pd.DataFrame(rows, columns=COLUMNS)
    if out is not None:
        atomic_write_text(Path(out), df.to_csv(index=False))
    return df


def _bench_rows(train_docs: Sequence[str], val_docs: Sequence[str], vocab_size: int, val_bytes: int) -> list[dict]:
    rows = []
    for name, train in (("bpe", train_bpe), ("sentencepiece", train_sentencepiece)):
        t0 = time.perf_counter()
        tok = train(list(train_docs), vocab_size)
        train_s = time.perf_counter() - t0
        encode_s = []
        for _ in range(2):  # cold, then warm
            t0 = time.perf_counter()
            n_tokens = sum(len(ids) for ids in tok.encode_batch(list(val_docs)))
            encode_s.append(max(time.perf_counter() - t0, 1e-9))
        rows.append({"tokenizer": name, "train_s": round(train_s, 3),
                     "encode_mb_per_s": round(val_bytes / 1e6 / encode_s[0], 3),
                     "encode_warm_mb_per_s": round(val_bytes / 1e6 / encode_s[1], 3),
                     "bytes_per_token": round(val_bytes / max(1, n_tokens), 4), "vocab_size": tok.vocab_size})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m week05_lm_pipeline.bench_tokenizer", description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", default=str(runs_root() / "week05" / "tokenizer_bench.csv"), help="CSV to write")
    p.add_argument("--vocab-size", type=int, default=4096, help="ids of each tokenizer, specials included")
    p.add_argument("--corpus", default="tiny_shakespeare", help="a registered text corpus or a folder of .txt files")
    a = p.parse_args(argv)
    corpus = load_corpus(CorpusConfig(corpus=a.corpus))
    df = bench_tokenizers(corpus.train, corpus.val, a.vocab_size, a.out)
    print(df.to_string(index=False))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
