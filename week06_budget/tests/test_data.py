"""Data versions on a fake pool: the split keeps groups together, every filter's removals add up, val is clean,
the manifests verify, and a pool that filters to nothing is a clear error."""

import pytest

from shared.data.corpus import CorpusError
from shared.data.manifest import verify_manifest
from week06_budget import config
from week06_budget.data import build_versions, split_groups
from week06_budget.tests.conftest import fake_pool


def _cfg(*extra):
    return config.load("smoke", ["data.vocab_size=300", *extra])


def test_the_split_keeps_each_group_on_one_side():
    train, val = split_groups(fake_pool(), 0.1, 0)
    assert {d.group for d in train}.isdisjoint({d.group for d in val})
    assert 0 < len(val) < len(train)


def test_versions_filters_and_val(fake_sources):
    v = build_versions(_cfg())
    a, b, _val = v.docs["A"], v.docs["B"], v.docs["val"]
    removed = {s.name: s.removed for s in v.steps}
    assert len(a) - sum(removed.values()) == len(b)
    assert removed["exact dedup"] > 0
    assert removed["near dedup (MinHash + LSH)"] > 0
    assert sum(n for k, n in removed.items() if k.startswith("quality")) > 0
    assert all(d.source == "fake" for d in b)  # every junk document went (its copies as exact duplicates)
    assert v.val_contaminated_after == {"A": 0, "B": 0}
    assert v.duplicate_rate["B"] == 0 < v.duplicate_rate["A"]
    for ver in (v.a, v.b):
        verify_manifest(ver.manifest_path)
    val_files = [[f for f in ver.manifest["files"] if f["path"] == "val.bin"] for ver in (v.a, v.b)]
    assert val_files[0] == val_files[1]  # one val set, byte for byte, in both versions
    assert [f["name"] for f in v.b.manifest["filters"]][:2] == ["exact dedup", "near dedup (MinHash + LSH)"]
    assert v.a.manifest["filters"] == []
    again = build_versions(_cfg())
    assert again.a.reused
    assert again.b.reused
    assert again.a.dir == v.a.dir


def test_val_documents_with_a_copy_in_train_are_removed(fake_sources, monkeypatch):
    pool = list(fake_sources)
    train, val = split_groups(pool, 0.05, 0)
    leak = [type(val[0])(val[0].text, "fake", "leak:0")]  # the same text in a group of its own, likely in train
    monkeypatch.setattr("week06_budget.data.load_sources", lambda names: pool + leak * 3)
    v = build_versions(_cfg("data.val_frac=0.05"))
    assert v.val_contaminated_after == {"A": 0, "B": 0}
    texts = {d.text for d in v.docs["val"]}
    assert not texts & {d.text for d in v.docs["A"]}


def test_a_pool_that_filters_to_nothing_is_a_clear_error(fake_sources):
    with pytest.raises(CorpusError, match="every training document was filtered out .* loosen its threshold"):
        build_versions(_cfg("quality.min_words=100000", "quality.max_words=100001"))
