import itertools

from shared.data.sampling import ResumableBatchSampler


def _epoch(sampler, epoch, start=0):
    sampler.set_epoch(epoch, start)
    return list(sampler)


def test_same_epoch_same_order_other_epoch_other_order():
    s = ResumableBatchSampler(103, 10, shuffle=True, seed=3)
    assert _epoch(s, 0) == _epoch(s, 0)
    assert _epoch(s, 0) != _epoch(s, 1)
    flat = list(itertools.chain.from_iterable(_epoch(s, 2)))
    assert sorted(flat) == list(range(103))


def test_starting_at_batch_k_is_the_tail_of_the_full_epoch():
    s = ResumableBatchSampler(103, 10, shuffle=True, seed=3)
    full = _epoch(s, 4)
    assert _epoch(s, 4, start=7) == full[7:]
    assert len(s) == len(full) - 7
    assert s.batches_per_epoch == len(full) == 11


def test_rank_shards_are_disjoint_and_cover_the_dataset():
    shards = [
        set(itertools.chain.from_iterable(_epoch(ResumableBatchSampler(100, 8, True, 0, rank, 4), 1)))
        for rank in range(4)
    ]
    assert all(not (a & b) for a, b in itertools.combinations(shards, 2))
    assert set().union(*shards) == set(range(100))


def test_each_rank_shard_is_deterministic_per_epoch_and_changes_across_epochs():
    for rank in range(2):
        s = ResumableBatchSampler(100, 8, True, 0, rank, 2)
        assert _epoch(s, 3) == _epoch(s, 3)
        assert _epoch(s, 3) != _epoch(s, 4)
        other = ResumableBatchSampler(100, 8, True, 0, 1 - rank, 2)
        assert not set(itertools.chain.from_iterable(_epoch(s, 3))) & set(itertools.chain.from_iterable(_epoch(other, 3)))
