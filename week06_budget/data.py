"""Days 37-38: two data versions of one pool of documents, and a validation set common to both.

- **A (raw)**: every document of the named sources except the held-out groups.
- **B**: A after exact dedup, MinHash near-dedup and the Gopher-style quality rules, in that order.
- **val**: the held-out groups (split *before* any filtering, by group so HH-RLHF's chosen/rejected twins stay
  together), exact-deduplicated, minus every document with an exact or near duplicate in A's training documents
  (B's are a subset of A's), so neither version has seen its val documents.

One byte-level BPE (written by hand, :mod:`shared.data.bpe`) trained on A's training documents encodes all three,
so nats/token compare across versions; both versions' folders hold the same ``val.bin``.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from shared.data.bpe import BPETokenizer, train_bpe
from shared.data.dedup import contaminated, exact_dedup, near_dedup
from shared.data.fetch import sha256sum
from shared.data.quality import apply_filters
from shared.data.registry import get_spec
from shared.data.sources import Document, load_sources
from shared.data.tokenizer import TokenizerError
from shared.data.versions import DataVersion, build_version, documents_hash
from shared.paths import data_root, models_root, runs_root
from shared.tracking import console
from week06_budget.config import Week06Config

WEEK = "week06"


@dataclass
class FilterStep:
    """What one filter removed from A's training documents on the way to B."""

    name: str
    params: dict[str, Any]
    criterion: str
    removed: int
    removed_bytes: int
    examples: list[dict[str, Any]] = field(default_factory=list)  # text (shortened), source, measured value


@dataclass
class Versions:
    """Both versions, the common val set and what happened on the way."""

    a: DataVersion
    b: DataVersion
    tokenizer: BPETokenizer
    tokenizer_s: float
    steps: list[FilterStep]
    docs: dict[str, list[Document]]  # "A", "B", "val"
    val_held_out: int  # documents in the held-out groups before cleaning
    val_removed_exact: int  # exact duplicates within val
    val_removed_contaminated: int  # with a duplicate in A's training documents
    val_contaminated_after: dict[str, int]  # after cleaning: val documents with a duplicate in A's / B's training docs
    duplicate_rate: dict[str, float]  # share of a version's training documents that are exact or near duplicates
    seconds: float


def _short(text: str, n: int = 160) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= n else one_line[: n - 1] + "…"


def split_groups(docs: list[Document], val_frac: float, seed: int) -> tuple[list[Document], list[Document]]:
    """(train, val): the document groups shuffled with ``seed``; ``val_frac`` of them (at least one) held out."""
    groups = sorted({d.group for d in docs})
    random.Random(seed).shuffle(groups)
    held = set(groups[: max(1, round(len(groups) * val_frac))])
    return [d for d in docs if d.group not in held], [d for d in docs if d.group in held]


def filter_to_b(train: list[Document], cfg: Week06Config) -> tuple[list[Document], list[FilterStep], dict[str, int]]:
    """A's training documents -> B's, one filter after another; also the exact / near duplicate counts of A."""
    steps, n_ex = [], cfg.data.examples
    ex = exact_dedup([d.text for d in train])
    steps.append(FilterStep("exact dedup", {"normalisation": "NFKC, lower case, punctuation removed, whitespace "
                                                             "collapsed", "hash": "sha256"},
                            "normalised text seen before", ex.n_removed,
                            sum(len(train[i].text.encode()) for i in ex.removed),
                            [{"text": _short(train[i].text), "source": train[i].source,
                              "value": f"copy of {train[j].group}"} for i, j in list(ex.removed.items())[:n_ex]]))
    kept = [train[i] for i in ex.kept]
    nd = near_dedup([d.text for d in kept], cfg.dedup)
    steps.append(FilterStep("near dedup (MinHash + LSH)", asdict(cfg.dedup),
                            f"Jaccard of word {cfg.dedup.shingle_size}-gram sets ≥ {cfg.dedup.threshold:g} with a "
                            "kept document", nd.n_removed, sum(len(kept[i].text.encode()) for i in nd.removed),
                            [{"text": _short(kept[i].text), "source": kept[i].source,
                              "value": f"Jaccard {nd.similarity[i]:.2f} with {kept[j].group}"}
                             for i, j in list(nd.removed.items())[:n_ex]]))
    kept = [kept[i] for i in nd.kept]
    q = apply_filters([d.text for d in kept], cfg.quality)
    for rule, removed in q.removed.items():
        steps.append(FilterStep(f"quality: {rule}", {"criterion": q.criterion(rule, cfg.quality)},
                                q.criterion(rule, cfg.quality), len(removed),
                                sum(len(kept[i].text.encode()) for i, _ in removed),
                                [{"text": _short(kept[i].text), "source": kept[i].source, "value": f"{v:.3g}"}
                                 for i, v in removed[:n_ex]]))
    return [kept[i] for i in q.kept], steps, {"exact": ex.n_removed, "near": nd.n_removed}


def clean_val(val: list[Document], train: list[Document], cfg: Week06Config) -> tuple[list[Document], int, int]:
    """val minus its own exact duplicates and minus every document with a duplicate in ``train``."""
    ex = exact_dedup([d.text for d in val])
    val = [val[i] for i in ex.kept]
    dirty = contaminated([d.text for d in val], [d.text for d in train], cfg.dedup)
    return [val[i] for i in dirty.kept], ex.n_removed, dirty.n_removed


def tokenizer_for(train: list[Document], cfg: Week06Config) -> tuple[BPETokenizer, float]:
    """The BPE trained on A's training documents (loaded when trained before on the same documents)."""
    t0 = time.perf_counter()
    key = documents_hash([d.text for d in train])[:12]
    path = models_root() / WEEK / "tokenizers" / (f"A-v{cfg.data.vocab_size}-l{cfg.data.tokenizer_max_lines}-"
                                                  f"{key}.bpe.json")
    try:
        return BPETokenizer.load(path), time.perf_counter() - t0
    except TokenizerError:
        tok = train_bpe([d.text for d in train], cfg.data.vocab_size, max_lines=cfg.data.tokenizer_max_lines)
        tok.save(path)
        return tok, time.perf_counter() - t0


def source_entries(names: list[str]) -> list[dict[str, Any]]:
    """Manifest entries of the source files (already fetched and verified by loading them)."""
    out = []
    for name in names:
        for f in get_spec(name).files:
            path = data_root() / f.relpath
            if path.is_file():
                out.append({"dataset": name, "path": f.relpath, "sha256": sha256sum(path), "bytes": path.stat().st_size})
    return out


def build_versions(cfg: Week06Config) -> Versions:
    """Load the sources, split, filter, tokenize and pack both versions (reused when their manifests verify).

    Raises:
        CorpusError: no source, an unknown one, or nothing left after filtering (naming the filter to loosen).
        DatasetError, TokenizerError: see :mod:`shared.data.sources`, :func:`shared.data.bpe.train_bpe`.
    """
    from shared.data.corpus import CorpusError

    t0 = time.perf_counter()
    names = list(cfg.data.sources) + list(cfg.data.extra)
    docs = load_sources(names)
    train_a, val_raw = split_groups(docs, cfg.data.val_frac, cfg.data.split_seed)
    train_b, steps, dups = filter_to_b(train_a, cfg)
    if not train_b:
        worst = max(steps, key=lambda s: s.removed)
        raise CorpusError(f"every training document was filtered out ({len(train_a):,} in A, 0 left in B; "
                          f"'{worst.name}' removed the most, {worst.removed:,}): loosen its threshold in the config")
    val, val_exact, val_dirty = clean_val(val_raw, train_a, cfg)
    if not val:
        raise CorpusError(f"no validation document is left after removing the {val_dirty} with a duplicate in "
                          "training: raise data.val_frac")
    after = {v: contaminated([d.text for d in val], [d.text for d in t], cfg.dedup).n_removed
             for v, t in (("A", train_a), ("B", train_b))}
    tok, tok_s = tokenizer_for(train_a, cfg)
    console(f"data: A {len(train_a):,} training documents, B {len(train_b):,}, val {len(val):,} "
            f"({len(val_raw) - len(val):,} of {len(val_raw):,} held-out documents removed); tokenizer {tok_s:.1f} s")
    root, sources = runs_root() / WEEK / "data", source_entries(names)
    val_texts = [d.text for d in val]
    split = {"val_frac": cfg.data.val_frac, "split_seed": cfg.data.split_seed, "by": "document group"}
    a = build_version(root, "A", {"train": [d.text for d in train_a], "val": val_texts}, tok, sources=sources,
                      filters=[], extra={"split": split})
    b = build_version(root, "B", {"train": [d.text for d in train_b], "val": val_texts}, tok, sources=sources,
                      filters=[{"name": s.name, "params": s.params, "removed_docs": s.removed,
                                "removed_bytes": s.removed_bytes} for s in steps], extra={"split": split})
    b_dups = exact_dedup([d.text for d in train_b]).n_removed + near_dedup([d.text for d in train_b], cfg.dedup).n_removed
    rate = {"A": (dups["exact"] + dups["near"]) / len(train_a), "B": b_dups / len(train_b)}
    return Versions(a, b, tok, tok_s, steps, {"A": train_a, "B": train_b, "val": val}, len(val_raw), val_exact,
                    val_dirty, after, rate, time.perf_counter() - t0)
