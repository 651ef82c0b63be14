"""Exact and MinHash dedup on hand-made documents: duplicates, near-duplicates at a known Jaccard, unrelated text."""

import random

import pytest

from shared.data.dedup import (
    DedupConfig,
    contaminated,
    exact_dedup,
    jaccard,
    near_dedup,
    normalise,
    shingles,
)

WORDS = [f"w{i}" for i in range(5000)]


def text(seed: int, n: int = 200) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n))


def with_jaccard(base: str, target: float, k: int = 1) -> str:
    """``base`` with words replaced by fresh ones until its k-shingle Jaccard with ``base`` is about ``target``."""
    words = base.split()
    fresh = iter(f"new{i}" for i in range(10**6))
    out = list(words)
    i = 0
    while jaccard(shingles(" ".join(out), k), shingles(base, k)) > target:
        out[i] = next(fresh)
        i += 1
    return " ".join(out)


def test_normalisation_makes_case_space_and_punctuation_variants_exact_duplicates():
    assert normalise("  Hello,   WORLD!\n") == normalise("hello world") == "hello world"
    res = exact_dedup(["Hello, world!", "a different text", "hello   world", "HELLO WORLD."])
    assert res.kept == [0, 1]
    assert res.removed == {2: 0, 3: 0}


def test_jaccard_of_shingle_sets():
    assert shingles("a b c d", 2) == {"a b", "b c", "c d"}
    assert shingles("a b", 5) == {"a b"}
    assert jaccard({"x", "y"}, {"y", "z"}) == pytest.approx(1 / 3)


@pytest.mark.parametrize("threshold", [0.5, 0.8])
def test_near_duplicates_above_the_threshold_go_and_those_below_stay(threshold):
    base = text(0)
    high, low = with_jaccard(base, threshold + 0.1), with_jaccard(base, threshold - 0.2)
    assert jaccard(shingles(high, 1), shingles(base, 1)) >= threshold
    docs = [base, text(1), high, low, text(2)]
    res = near_dedup(docs, DedupConfig(threshold=threshold, shingle_size=1, num_perm=256))
    assert res.kept == [0, 1, 3, 4]
    assert res.removed == {2: 0}
    assert res.similarity[2] == pytest.approx(jaccard(shingles(high, 1), shingles(base, 1)))


def test_exact_copies_are_near_duplicates_and_unrelated_documents_all_stay():
    docs = [text(i) for i in range(30)]
    res = near_dedup(docs + [docs[3], docs[7]], DedupConfig(threshold=0.8, shingle_size=3))
    assert res.kept == list(range(30))
    assert res.removed == {30: 3, 31: 7}


def test_contamination_finds_val_documents_with_a_duplicate_in_train():
    train = [text(i) for i in range(20)]
    val = [text(100), train[4].upper(), with_jaccard(train[9], 0.9), text(101)]
    res = contaminated(val, train, DedupConfig(threshold=0.8, shingle_size=1))
    assert res.kept == [0, 3]
    assert res.removed == {1: 4, 2: 9}
    assert res.similarity[1] == 1.0
