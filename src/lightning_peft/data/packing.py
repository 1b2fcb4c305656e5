"""Padding-free packing for SFT: a batch's examples concatenated into one row, no padding token computed.

The packed row carries `position_ids` that restart at 0 for every example and no `attention_mask`.
From that, `transformers` (>= 4.53, `masking_utils.find_packed_sequence_indices`) builds a
block-diagonal causal mask for the eager, sdpa and flex attention backends (and flash-attention
reads the same boundaries from the position ids), so no token attends across examples. The first
token of every example gets label -100, so no loss crosses a boundary either. The loss of a packed
batch therefore equals the padded batch's token-weighted mean, while the compute spent on padding
(and on length imbalance within a batch) disappears. The row itself is built by transformers'
`DataCollatorWithFlattening` ("Enhancing Training Efficiency Using Packing with Flash Attention",
Kundu et al. 2024, arXiv:2407.09105); `PackingCollator` only says which labels are learned.

Cost: flash-attention (varlen) attends within each example only, and so does `packed_sdpa`
(`lightning_peft.attention`: PyTorch's sdpa run per example), which lightning-peft's modules pick on a CPU
for packed data. With transformers' own sdpa and eager attention, the row's `[T, T]` block-diagonal
mask is materialised and the whole row attended, so attention work grows with the square of the row
length T: there packing pays when attention is a small share of a step (short examples); for long
examples keep rows short with `max_tokens_per_batch` or prefer length bucketing.

Counting tokens: a packed batch has no `attention_mask` and no padding, so its number of real
tokens is `batch["input_ids"].numel()` (with padding it is `batch["attention_mask"].sum()`).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch.utils.data import Sampler

from lightning_peft.constants import IGNORE_INDEX
from lightning_peft.data.errors import DataConfigError
from lightning_peft.data.sampler import LengthBucketBatchSampler, _world


class PackingCollator:
    """Collate SFT examples into `{"input_ids", "position_ids", "labels"}`, each `LongTensor[1, total tokens]`.

    `labels` is -100 on each example's prompt (its first `prompt_length` tokens, or wherever its
    `loss_mask` is 0 for a conversation) and on each example's first token (which would otherwise be
    predicted from the previous example's last token).

    Example::

        >>> batch = PackingCollator()([{"input_ids": [5, 6, 7], "prompt_length": 1}, {"input_ids": [8, 9], "prompt_length": 1}])
        >>> batch["position_ids"].tolist(), batch["labels"].tolist()
        ([[0, 1, 2, 0, 1]], [[-100, 6, 7, -100, 9]])
    """

    def __init__(self) -> None:
        from transformers import DataCollatorWithFlattening

        # transformers' flattening collator does the concatenation, the restarting position ids and the
        # -100 on every example's first label; ours only says which labels are learned (`_labels`).
        self.flatten = DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE_INDEX, return_tensors="pt")

    @staticmethod
    def _labels(example: dict[str, Any]) -> list[int]:
        """The example's token ids, -100 where no loss is taken (its prompt, or where its loss mask is 0)."""
        ids = list(example["input_ids"])
        if "loss_mask" in example:
            return [token if keep else IGNORE_INDEX for token, keep in zip(ids, example["loss_mask"])]
        masked = max(1, int(example["prompt_length"]))
        return [IGNORE_INDEX] * min(masked, len(ids)) + ids[masked:]

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.flatten([{"input_ids": list(e["input_ids"]), "labels": self._labels(e)} for e in examples])
        return {key: batch[key].long() for key in ("input_ids", "position_ids", "labels")}


class TokenBudgetBatchSampler(LengthBucketBatchSampler):
    """Batches of as many examples as fit in `max_tokens` tokens (their lengths summed), for packed rows.

    Each epoch the indices are shuffled from `seed + epoch` (as in `LengthBucketBatchSampler`) and cut
    greedily: an example starts a new batch when it would push the current one past `max_tokens`; the
    batch of most tokens then goes first (see `LengthBucketBatchSampler`). The number of batches
    varies slightly between epochs; `len()` is that of the current epoch.
    Resume (`skip_batches`) and DDP sharding work as in the parent class.

    Args:
        lengths: Length of every example, indexed like the dataset.
        max_tokens: Token budget of one batch; must be at least the longest example.
        shuffle: Reshuffle per epoch; False keeps the index order (evaluation).
        seed: Base seed of the per-epoch permutation.
        drop_last: Drop the last (possibly underfull) batch.
        sampler: Indices to draw from (Lightning injects its `DistributedSampler` here under DDP).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        max_tokens: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        sampler: Optional[Sampler[int]] = None,
    ) -> None:
        super().__init__(lengths, batch_size=1, shuffle=shuffle, seed=seed, drop_last=drop_last, sampler=sampler,
                         packed=True)
        longest = max(self.lengths, default=0)
        if not isinstance(max_tokens, int) or max_tokens < max(longest, 1):
            raise DataConfigError(f"max_tokens_per_batch={max_tokens!r} is smaller than the longest example ({longest} "
                                  "tokens); raise it to at least max_length.")
        self.max_tokens = max_tokens

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        pool = self._pool()
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            pool = [pool[k] for k in torch.randperm(len(pool), generator=generator).tolist()]
        batches, current, used = [], [], 0
        for index in pool:
            if current and used + self.lengths[index] > self.max_tokens:
                batches.append(current)
                current, used = [], 0
            current.append(index)
            used += self.lengths[index]
        if current and not self.drop_last:
            batches.append(current)
        return batches

    def __len__(self) -> int:
        batches = self.epoch_batches(self._current_epoch())
        if self._own_sampler():
            batches = self._shard(batches, *_world())
        return len(batches)

