from __future__ import annotations

import random

import pytest
import torch
import torch.distributed
from torch.utils.data import DistributedSampler

from lightning_peft.data import DataConfigError, LengthBucketBatchSampler

_RNG = random.Random(0)
LENGTHS = [_RNG.randint(1, 200) for _ in range(1003)]


def flat(batches):
    return [i for batch in batches for i in batch]


def fake_world(monkeypatch, rank, world):
    monkeypatch.setattr(torch.distributed, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: rank)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: world)


def test_every_index_exactly_once_per_epoch():
    sampler = LengthBucketBatchSampler(LENGTHS, batch_size=16, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert sorted(flat(batches)) == list(range(len(LENGTHS)))
        assert len(batches) == len(sampler) == 63


def test_deterministic_per_seed_and_epoch_and_independent_of_global_rng():
    a = LengthBucketBatchSampler(LENGTHS, batch_size=16, seed=3)
    b = LengthBucketBatchSampler(LENGTHS, batch_size=16, seed=3)
    torch.manual_seed(123)
    first = list(a)
    torch.manual_seed(999)
    assert list(b) == first
    a.set_epoch(1)
    assert list(a) != first
    assert list(LengthBucketBatchSampler(LENGTHS, batch_size=16, seed=4)) != first


def test_batches_group_similar_lengths():
    sampler = LengthBucketBatchSampler(LENGTHS, batch_size=16, seed=0)
    bucketed = sum(max(LENGTHS[i] for i in b) - min(LENGTHS[i] for i in b) for b in sampler)
    plain = LengthBucketBatchSampler(LENGTHS, batch_size=16, seed=0, megabatch_batches=1)
    random_spread = sum(max(LENGTHS[i] for i in b) - min(LENGTHS[i] for i in b) for b in plain)
    assert bucketed < random_spread / 4


def test_drop_last_drops_the_short_batch():
    sampler = LengthBucketBatchSampler(LENGTHS, batch_size=16, drop_last=True)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 1003 // 16 and all(len(b) == 16 for b in batches)


@pytest.mark.parametrize("megabatch_batches", [1, 50])
def test_largest_batch_comes_first_and_the_rest_stays_shuffled(megabatch_batches):
    sampler = LengthBucketBatchSampler(LENGTHS, batch_size=16, seed=5, megabatch_batches=megabatch_batches)
    padded = lambda batch: len(batch) * max(LENGTHS[i] for i in batch)  # noqa: E731
    orders = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert padded(batches[0]) == max(map(padded, batches))
        orders.append([padded(b) for b in batches[1:]])
    assert all(order != sorted(order, reverse=True) for order in orders)
    assert orders[0] != orders[1]


def test_packed_batches_put_the_most_summed_tokens_first():
    summed = lambda batch: sum(LENGTHS[i] for i in batch)  # noqa: E731
    padded = lambda batch: len(batch) * max(LENGTHS[i] for i in batch)  # noqa: E731
    differ = 0
    for seed in range(10):
        packed = list(LengthBucketBatchSampler(LENGTHS, batch_size=16, seed=seed, megabatch_batches=1, packed=True))
        plain = list(LengthBucketBatchSampler(LENGTHS, batch_size=16, seed=seed, megabatch_batches=1))
        assert summed(packed[0]) == max(map(summed, packed)) and padded(plain[0]) == max(map(padded, plain))
        differ += packed[0] != plain[0]
    assert differ, "the packed flag never changed which batch goes first"


def test_unshuffled_keeps_the_order_of_megabatches():
    sampler = LengthBucketBatchSampler(list(range(100)), batch_size=10, shuffle=False, megabatch_batches=2)
    assert list(sampler)[0] == list(range(19, 9, -1))


@pytest.mark.parametrize("drop_last", [False, True])
def test_distributed_shares_are_disjoint_and_equal(monkeypatch, drop_last):
    world = 3
    shares = []
    for rank in range(world):
        fake_world(monkeypatch, rank, world)
        sampler = LengthBucketBatchSampler(LENGTHS, batch_size=16, seed=1, drop_last=drop_last)
        shares.append(list(sampler))
        assert len(shares[-1]) == len(sampler)
    assert len({len(share) for share in shares}) == 1
    batch_sets = [{tuple(b) for b in share} for share in shares]
    covered = set().union(*(set(flat(share)) for share in shares))
    if drop_last:
        assert not any(batch_sets[i] & batch_sets[j] for i in range(world) for j in range(i + 1, world))
        assert sum(len(share) for share in shares) == (1003 // 16) // world * world
    else:  # 63 batches on 3 ranks divide evenly: a true partition
        assert covered == set(range(len(LENGTHS)))
        assert sum(len(flat(share)) for share in shares) == len(LENGTHS)


def test_distributed_pads_by_repeating_batches_when_uneven(monkeypatch):
    world = 4  # 63 batches -> 16 each, one batch repeated
    counts = []
    for rank in range(world):
        fake_world(monkeypatch, rank, world)
        counts.append(len(list(LengthBucketBatchSampler(LENGTHS, batch_size=16))))
    assert counts == [16] * 4


def test_injected_distributed_sampler_is_not_sharded_again(monkeypatch):
    fake_world(monkeypatch, 0, 2)  # must be ignored when Lightning injected its own sampler
    shares = []
    for rank in range(2):
        dist = DistributedSampler(range(len(LENGTHS)), num_replicas=2, rank=rank, shuffle=False)
        dist.set_epoch(5)
        sampler = LengthBucketBatchSampler(LENGTHS, batch_size=16, seed=1, sampler=dist)
        shares.append(list(sampler))
        assert len(shares[-1]) == len(sampler) == 32
        assert sorted(flat(shares[-1])) == sorted(dist)
    assert set(flat(shares[0])) | set(flat(shares[1])) == set(range(len(LENGTHS)))


def test_epoch_comes_from_the_injected_sampler():
    dist = DistributedSampler(range(len(LENGTHS)), num_replicas=1, rank=0, shuffle=False)
    sampler = LengthBucketBatchSampler(LENGTHS, batch_size=16, seed=1, sampler=dist)
    first = list(sampler)
    dist.set_epoch(1)
    assert list(sampler) != first


def test_skip_batches_resumes_with_the_same_remaining_batches_once():
    sampler = LengthBucketBatchSampler(LENGTHS, batch_size=16, seed=2)
    sampler.set_epoch(1)
    full = list(sampler)
    sampler.skip_batches(10)
    assert list(sampler) == full[10:]
    assert list(sampler) == full  # one time only
    assert len(sampler) == len(full)


def test_skip_for_another_epoch_is_discarded():
    sampler = LengthBucketBatchSampler(LENGTHS, batch_size=16, seed=2)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.skip_batches(10, epoch=1)
    assert list(sampler) == full
    sampler.skip_batches(10, epoch=2)
    assert list(sampler) == full[10:]


def test_bad_arguments():
    with pytest.raises(DataConfigError, match="batch_size must be a positive integer"):
        LengthBucketBatchSampler(LENGTHS, batch_size=0)
    with pytest.raises(DataConfigError, match="negative"):
        LengthBucketBatchSampler(LENGTHS, batch_size=2).skip_batches(-1)


def test_lightning_ddp_reinstantiation_injects_its_sampler_and_keeps_the_skip():
    """What Lightning 2.6 does to a train DataLoader under DDP with use_distributed_sampler=True."""
    from lightning.fabric.utilities.data import _replace_dunder_methods, _set_sampler_epoch
    from lightning.pytorch.trainer.states import RunningStage
    from lightning.pytorch.utilities.data import _update_dataloader
    from torch.utils.data import BatchSampler, DataLoader

    dataset = list(range(len(LENGTHS)))
    with _replace_dunder_methods(DataLoader, "dataset"), _replace_dunder_methods(BatchSampler):  # the hook
        sampler = LengthBucketBatchSampler(LENGTHS, batch_size=16, seed=1)
        sampler.skip_batches(3, epoch=2)
        loader = DataLoader(dataset, batch_sampler=sampler)
    shares = []
    for rank in range(2):
        dist = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=False)
        prepared = _update_dataloader(loader, dist, mode=RunningStage.TRAINING)
        assert isinstance(prepared.batch_sampler, LengthBucketBatchSampler)
        assert prepared.batch_sampler.sampler is dist and prepared.batch_sampler.seed == 1
        _set_sampler_epoch(prepared, 2)
        expected = LengthBucketBatchSampler(LENGTHS, batch_size=16, seed=1, sampler=dist)
        expected.set_epoch(2)
        shares.append([b.tolist() for b in prepared])
        assert shares[-1] == [b for b in list(expected)[3:]]  # the recorded skip survived re-instantiation
    assert set(flat(shares[0])) & set(flat(shares[1])) <= {0}  # DistributedSampler pads 1003 with index 0


def test_lightning_sets_the_epoch_on_an_uninjected_sampler():
    from lightning.fabric.utilities.data import _set_sampler_epoch
    from torch.utils.data import DataLoader

    sampler = LengthBucketBatchSampler(LENGTHS, batch_size=16)
    _set_sampler_epoch(DataLoader(range(len(LENGTHS)), batch_sampler=sampler), 4)
    assert sampler.epoch == 4
