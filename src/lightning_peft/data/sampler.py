"""Length-bucketed batches: examples of similar length share a batch, so padding stays small.

Why not transformers' `LengthGroupedSampler` (the same megabatch idea, longest first): it is an
index sampler for a fixed batch size, so it cannot skip the batches already trained when a run
resumes mid-epoch (`skip_batches`), cannot order packed batches by their summed tokens, cannot cut
batches by a token budget (`TokenBudgetBatchSampler`), and draws from the global RNG rather than
from `seed + epoch`; those are what this module adds.

How this meets Lightning 2.6 under DDP (read from `lightning/pytorch/utilities/data.py`,
`lightning/fabric/utilities/data.py` and `trainer/connectors/data_connector.py`):

- With `Trainer(use_distributed_sampler=True)` (the default) and a distributed strategy, Lightning
  re-creates every DataLoader whose `.sampler` is not a `DistributedSampler`, even one driven by a
  custom `batch_sampler`. For a batch sampler it then (a) re-instantiates a `BatchSampler` subclass
  from the `__init__` arguments it captured while the `*_dataloader` hook ran, replacing the argument
  named `sampler` with a `DistributedSampler` over the dataset, (b) calls
  `cls(sampler, batch_size=..., drop_last=...)` for a non-subclass that has those attributes, which
  would pass the DistributedSampler as our `lengths`, or (c) raises `TypeError` otherwise.
- Attribute writes made on the batch sampler inside the hook (after `__init__`) are recorded and
  replayed on the re-created object, so `skip_batches` called in `train_dataloader()` survives (a).
- Every epoch Lightning calls `set_epoch` on `dataloader.sampler` and `dataloader.batch_sampler.sampler`.

So this class subclasses `BatchSampler` and takes an optional `sampler` (path (a)). When Lightning
injects its `DistributedSampler`, the indices it yields are already this rank's share (equal count on
every rank), we bucket only those and do not shard again, and we read the epoch from it. With no
injected sampler, `self.sampler` is `self`, so Lightning's `set_epoch` reaches us, and if
`torch.distributed` is initialized when iterating (e.g. `use_distributed_sampler=False` or plain
torch DDP) we shard whole batches across ranks ourselves. Either way nothing is sharded twice.
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

import torch
import torch.distributed
from torch.utils.data import BatchSampler, Sampler

from lightning_peft.data.errors import DataConfigError

MEGABATCH_BATCHES = 50  # sort within ~50 batches: similar lengths per batch, yet order stays random


def _world() -> tuple[int, int]:
    """(rank, world size) of the initialized default process group, or (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class LengthBucketBatchSampler(BatchSampler):
    """Yield batches of indices grouped by length, reshuffled per epoch from `seed + epoch`.

    Each epoch: permute the indices with a private `torch.Generator` (never the global RNG), cut the
    permutation into megabatches of `megabatch_batches * batch_size`, sort each by length, cut it into
    batches, shuffle the batch order, and move the largest batch (most tokens, padding included) to the front.
    With `shuffle=False` the index order is kept (sorting within megabatches only), which suits
    evaluation. `megabatch_batches=1` gives a plain seeded shuffle.

    Largest first (as `transformers`' `LengthGroupedSampler` does): a batch that does not fit in memory
    fails at the first step, not hours in, and the allocator (CUDA's caching allocator, glibc's heap on a
    CPU) grows once to the size every later batch fits in, instead of growing again, fragmented, each
    time a longer batch comes.

    Args:
        lengths: Length of every example (e.g. token count), indexed like the dataset.
        batch_size: Examples per batch.
        shuffle: Reshuffle per epoch; False for evaluation.
        seed: Base seed; the permutation of epoch `e` depends only on `seed + e`.
        drop_last: Drop the last incomplete batch (and, when sharding, batches that do not divide evenly
            among ranks) instead of keeping it (and repeating batches so every rank gets the same count).
        sampler: Indices to draw from instead of all of `range(len(lengths))`; Lightning passes its
            `DistributedSampler` here under DDP (see the module docstring).
        megabatch_batches: Batches per sorted megabatch.
        packed: The batches become packed rows (no padding): a batch's size, for largest-first, is its
            examples' lengths summed rather than its size times its longest example.

    Example::

        >>> sampler = LengthBucketBatchSampler([5, 1, 4, 2, 3, 6], batch_size=2, seed=0)
        >>> sorted(i for batch in sampler for i in batch)
        [0, 1, 2, 3, 4, 5]
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        sampler: Optional[Sampler[int]] = None,
        megabatch_batches: int = MEGABATCH_BATCHES,
        packed: bool = False,
    ) -> None:
        if isinstance(lengths, Sampler):
            raise TypeError("LengthBucketBatchSampler needs per-example lengths first, not a sampler.")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise DataConfigError(f"batch_size must be a positive integer, got {batch_size!r}.")
        if megabatch_batches < 1:
            raise DataConfigError(f"megabatch_batches must be >= 1, got {megabatch_batches}.")
        self.lengths = [int(length) for length in lengths]
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.megabatch_batches = megabatch_batches
        self.packed = packed
        # `self` when nothing is injected, so Lightning's per-epoch `batch_sampler.sampler.set_epoch` reaches us.
        self.sampler = self if sampler is None else sampler
        self.epoch = 0
        self._skip: Optional[tuple[Optional[int], int]] = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip_batches(self, num_batches: int, epoch: Optional[int] = None) -> None:
        """Make the next iteration skip its first `num_batches` batches (once), to resume mid-epoch.

        With `epoch` given, the skip applies only if the next iteration is that epoch (a checkpoint written
        at the end of an epoch must not cut into the following one); otherwise it is discarded.
        """
        if num_batches < 0:
            raise DataConfigError(f"Cannot skip a negative number of batches ({num_batches}).")
        self._skip = (epoch, num_batches)

    def _own_sampler(self) -> bool:
        return self.sampler is self

    def _current_epoch(self) -> int:
        return self.epoch if self._own_sampler() else int(getattr(self.sampler, "epoch", self.epoch))

    def _pool(self) -> list[int]:
        return list(range(len(self.lengths))) if self._own_sampler() else [int(i) for i in self.sampler]

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All batches of one epoch, before the largest is moved first and before any sharding across ranks."""
        pool = self._pool()
        generator = torch.Generator().manual_seed(self.seed + epoch)
        if self.shuffle:
            pool = [pool[k] for k in torch.randperm(len(pool), generator=generator).tolist()]
        span = self.batch_size * self.megabatch_batches
        batches = []
        for start in range(0, len(pool), span):
            chunk = sorted(pool[start:start + span], key=self.lengths.__getitem__, reverse=True)
            batches.extend(chunk[k:k + self.batch_size] for k in range(0, len(chunk), self.batch_size))
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()  # only the final megabatch can end short
        if self.shuffle:
            batches = [batches[k] for k in torch.randperm(len(batches), generator=generator).tolist()]
        return batches

    def batch_tokens(self, batch: list[int]) -> int:
        """Tokens a batch computes on: summed lengths when packed, else its size times its longest example."""
        lengths = [self.lengths[i] for i in batch]
        return sum(lengths) if self.packed else len(lengths) * max(lengths)

    def _largest_first(self, batches: list[list[int]]) -> list[list[int]]:
        """`batches` with the one of most `batch_tokens` moved to the front (the first of equals)."""
        if not batches:
            return batches
        largest = max(range(len(batches)), key=lambda k: self.batch_tokens(batches[k]))
        return [batches[largest], *batches[:largest], *batches[largest + 1:]]

    def _shard(self, batches: list[list[int]], rank: int, world: int) -> list[list[int]]:
        """Rank `rank`'s share of whole batches; every rank gets the same count."""
        if world == 1 or not batches:
            return batches
        if self.drop_last:
            batches = batches[: len(batches) // world * world]
        else:
            while len(batches) % world:
                batches = batches + batches[: world - len(batches) % world]
        return batches[rank::world]

    def __iter__(self) -> Iterator[list[int]]:
        epoch = self._current_epoch()
        batches = self.epoch_batches(epoch)
        if self.shuffle:
            batches = self._largest_first(batches)
        if self._own_sampler():
            batches = self._shard(batches, *_world())
        skip, self._skip = self._skip, None
        if skip is not None and skip[0] in (None, epoch):
            batches = batches[skip[1]:]
        yield from batches

    def __len__(self) -> int:
        """Batches per epoch on this rank (a pending `skip_batches` does not change it: Lightning counts from 0)."""
        size = len(self.lengths) if self._own_sampler() else len(self.sampler)
        total = size // self.batch_size if self.drop_last else -(-size // self.batch_size)
        rank, world = _world() if self._own_sampler() else (0, 1)
        if world > 1 and total:
            total = total // world if self.drop_last else -(-total // world)
        return total
