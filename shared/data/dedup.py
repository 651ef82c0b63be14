"""Duplicate removal: exact (a hash of the normalised text) and near-duplicate (MinHash + LSH, ``datasketch``).

Both keep the first document of a duplicate group and report every removed one with the document it duplicates,
so a log can show what went and why. Normalisation follows CCNet's (Wenzek et al. 2019,
https://arxiv.org/abs/1911.00359, section 3.3): NFKC, lower case, punctuation removed, whitespace collapsed, so texts
that differ only in case, spacing or punctuation count as exact duplicates. Near-duplicates are documents whose sets
of word ``shingle_size``-grams have a Jaccard similarity of at least ``threshold`` (Broder 1997; MinHash estimates
it, LSH finds the candidate pairs without comparing every pair: Leskovec, Rajaraman & Ullman, *Mining of Massive
Datasets*, ch. 3; the setting of Lee et al. 2022, https://arxiv.org/abs/2107.06499).
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

import regex

from shared.config import at_least, in_range

_PUNCT = regex.compile(r"\p{P}+")
_SPACE = regex.compile(r"\s+")


@dataclass
class DedupConfig:
    """Near-duplicate detection: MinHash signatures of word shingles, banded by LSH."""

    threshold: float = in_range(0, 1, 0.8, lo_open=True)  # Jaccard similarity at or above which two documents are near-duplicates
    shingle_size: int = at_least(1, 5)  # words per shingle
    num_perm: int = at_least(16, 128)  # MinHash permutations (the estimate's standard error is about 1/sqrt(num_perm))
    seed: int = 1  # of the MinHash permutations


@dataclass
class DedupResult:
    """Which documents stay, and for each removed one the index of the kept document it duplicates."""

    kept: list[int]  # indices into the input, in order
    removed: dict[int, int] = field(default_factory=dict)  # removed index -> the kept index it duplicates
    similarity: dict[int, float] = field(default_factory=dict)  # removed index -> its Jaccard with that document

    @property
    def n_removed(self) -> int:
        return len(self.removed)


def normalise(text: str) -> str:
    """NFKC, lower case, punctuation removed, runs of whitespace as one space, stripped."""
    text = unicodedata.normalize("NFKC", text).lower()
    return _SPACE.sub(" ", _PUNCT.sub(" ", text)).strip()


def text_hash(text: str) -> str:
    """sha256 (hex) of the normalised text: equal for exact duplicates."""
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()


def exact_dedup(docs: Sequence[str]) -> DedupResult:
    """Keep the first document of each group whose normalised texts are equal."""
    first: dict[str, int] = {}
    out = DedupResult([])
    for i, doc in enumerate(docs):
        h = text_hash(doc)
        if h in first:
            out.removed[i], out.similarity[i] = first[h], 1.0
        else:
            first[h] = i
            out.kept.append(i)
    return out


def shingles(text: str, k: int) -> set[str]:
    """The set of word ``k``-grams of the normalised text (a text of fewer than ``k`` words is one shingle)."""
    words = normalise(text).split()
    if len(words) <= k:
        return {" ".join(words)}
    return {" ".join(words[i:i + k]) for i in range(len(words) - k + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    """|a ∩ b| / |a ∪ b| (1.0 for two empty sets)."""
    return len(a & b) / len(a | b) if a or b else 1.0


class NearDuplicateIndex:
    """MinHash signatures of the documents added so far, in an LSH index; :meth:`find` returns the most similar
    one at or above the threshold. Candidates LSH proposes are confirmed on the exact Jaccard of their shingle
    sets, so the estimate's noise can only miss a pair near the threshold, never remove a dissimilar one."""

    def __init__(self, cfg: DedupConfig) -> None:
        from datasketch import MinHashLSH  # imported where used: week 1 does not pay for it

        self.cfg = cfg
        self.lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm)
        self.sets: dict[int, set[str]] = {}

    def signature(self, sh: set[str]):
        from datasketch import MinHash

        m = MinHash(num_perm=self.cfg.num_perm, seed=self.cfg.seed)
        m.update_batch([s.encode("utf-8") for s in sorted(sh)])
        return m

    def find(self, text: str) -> tuple[int | None, float, set[str], object]:
        """``(index of the most similar indexed document or None, its Jaccard, the text's shingles, signature)``."""
        sh = shingles(text, self.cfg.shingle_size)
        sig = self.signature(sh)
        best, best_j = None, 0.0
        for key in self.lsh.query(sig):
            j = jaccard(sh, self.sets[key])
            if j >= self.cfg.threshold and (best is None or (j, -key) > (best_j, -best)):  # ties: the earliest
                best, best_j = key, j
        return best, best_j, sh, sig

    def add(self, key: int, sh: set[str], sig: object) -> None:
        self.lsh.insert(key, sig)
        self.sets[key] = sh


def near_dedup(docs: Sequence[str], cfg: DedupConfig) -> DedupResult:
    """Keep a document unless an earlier kept one is a near-duplicate (Jaccard ≥ ``cfg.threshold``)."""
    index, out = NearDuplicateIndex(cfg), DedupResult([])
    for i, doc in enumerate(docs):
        match, j, sh, sig = index.find(doc)
        if match is None:
            index.add(i, sh, sig)
            out.kept.append(i)
        else:
            out.removed[i], out.similarity[i] = match, j
    return out


def contaminated(queries: Sequence[str], reference: Sequence[str], cfg: DedupConfig) -> DedupResult:
    """Which ``queries`` (e.g. validation documents) have an exact or near duplicate in ``reference`` (e.g. a
    training set): ``removed`` maps a query index to the reference index it duplicates; ``kept`` are the clean
    queries."""
    index = NearDuplicateIndex(cfg)
    hashes = {}
    for i, doc in enumerate(reference):
        hashes.setdefault(text_hash(doc), i)
        sh = shingles(doc, cfg.shingle_size)
        index.add(i, sh, index.signature(sh))
    out = DedupResult([])
    for i, doc in enumerate(queries):
        if (h := text_hash(doc)) in hashes:
            out.removed[i], out.similarity[i] = hashes[h], 1.0
            continue
        match, j, _, _ = index.find(doc)
        if match is None:
            out.kept.append(i)
        else:
            out.removed[i], out.similarity[i] = match, j
    return out
