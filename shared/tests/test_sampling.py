import itertools

import numpy as np
import pytest
import torch

from shared.data.sampling import ResumableBatchSampler, random_batch


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


def test_ranks_draw_disjoint_slices_whose_union_is_the_one_process_batch():
    data = np.arange(5000, dtype=np.uint16)  # a memmap-like stream: window = its start offset + arange
    single_x, single_y = random_batch(data, 12, 16, seed=3, index=7)  # one process, 3 x 4 windows
    parts = [random_batch(data, 4, 16, seed=3, index=7, rank=r, world_size=3) for r in range(3)]
    assert torch.equal(torch.cat([x for x, _ in parts]), single_x)
    assert torch.equal(torch.cat([y for _, y in parts]), single_y)
    assert len({int(x[0, 0]) for x, _ in parts}) == 3  # each rank its own windows
    with_one = random_batch(data, 4, 16, seed=3, index=7)
    assert torch.equal(with_one[0], single_x[:4])  # rank 0 of 3 starts like the one-process draw
    with pytest.raises(ValueError, match="rank 3"):
        random_batch(data, 4, 16, seed=3, index=7, rank=3, world_size=3)
