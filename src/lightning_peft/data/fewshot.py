"""Few-shot classification data: k seeded examples per class to train on, the rest of the training split unlabelled.

The few-shot setting of PET (Schick & Schuetze 2021, "Exploiting Cloze Questions for Few Shot Text
Classification and Natural Language Inference", arXiv:2001.07676): a small labelled set T of k
examples per class and a larger unlabelled set D of the same task's text (used by PET's language-model
term, its ensemble labelling and iPET). Here T is drawn with `shot_seed` from the training split of
any classification data, and D is what remains of that split with its labels dropped; validation and
test are the seeded splits `ClassificationData` makes, untouched by `shot_seed`, so runs with
different shot seeds are scored on the same examples.

`pool_from="test"` takes D from the test split's inputs instead, their labels dropped: transductive
fine-tuning (Zhong et al. 2023, "Bag of Tricks for Effective Language Model Pretraining and Downstream
Adaptation: A Case Study on GLUE", tech report), where the unlabelled test inputs feed the
language-model term. `train_on_texts` makes the training set label-free text (PCP's filled-in patterns).
"""

from __future__ import annotations

import random
from typing import Any, Literal, Optional, Protocol, Sequence, Union, runtime_checkable

import torch
from torch.utils.data import DataLoader

from lightning_peft.data.classification import ClassificationData
from lightning_peft.data.collate import PadCollator, pad_right
from lightning_peft.data.errors import DataConfigError
from lightning_peft.data.sampler import LengthBucketBatchSampler
from lightning_peft.data.tokenized import TokenizedDataset, flatten

UNLABELLED = "unlabelled"
ORDERED_SPLITS = ("train", "test", UNLABELLED)
POOL_SOURCES = ("train", "test")


@runtime_checkable
class UnlabelledPool(Protocol):
    """Data with an unlabelled pool of the task's text (what PET's language-model term and its ensemble read)."""

    def pool_size(self) -> int: ...

    def unlabelled_dataloader(self, batch_size: Optional[int] = None, shuffle: bool = True) -> Union[DataLoader, list]: ...


# How to give a method that reads the unlabelled pool one (every refusal of an empty pool ends with it).
POOL_REMEDY = ("use FewShotClassificationData with max_unlabelled > 0 (or null) and more training examples than "
               "shots_per_class x classes")


def has_pool(data: object) -> bool:
    """Whether `data` (set up) serves a non-empty unlabelled pool."""
    return isinstance(data, UnlabelledPool) and data.pool_size() > 0


def pick_shots(labels: list[int], label_names: list[str], shots_per_class: int, seed: int) -> tuple[list[int], list[int]]:
    """Positions of `shots_per_class` examples of every class (drawn with `seed`) and of all the others.

    Each class's positions are shuffled with `random.Random(seed)` and the first k kept, so the same
    seed gives the same shots and a class's shots do not depend on how many examples other classes have.
    """
    by_class: dict[int, list[int]] = {index: [] for index in range(len(label_names))}
    for position, label in enumerate(labels):
        by_class[label].append(position)
    smallest = min(by_class, key=lambda index: len(by_class[index]))
    if len(by_class[smallest]) < shots_per_class:
        raise DataConfigError(
            f"shots_per_class={shots_per_class} is more than the training split's {len(by_class[smallest])} examples of "
            f"class {label_names[smallest]!r} (its smallest class); lower shots_per_class or lower val_size/test_size."
        )
    rng = random.Random(seed)
    shots: list[int] = []
    for index in range(len(label_names)):
        positions = list(by_class[index])
        rng.shuffle(positions)
        shots.extend(positions[:shots_per_class])
    chosen = set(shots)
    return sorted(shots), [position for position in range(len(labels)) if position not in chosen]


class UnlabelledCollator:
    """Right-padded `{"input_ids", "attention_mask"}` batches: the unlabelled pool has no `labels`."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids = [example["input_ids"] for example in examples]
        return {"input_ids": pad_right(ids, self.pad_token_id), "attention_mask": pad_right([[1] * len(i) for i in ids], 0)}


class FewShotCollator:
    """Labelled examples as `PadCollator` batches them; pool examples with a teacher's `soft_labels` [B, classes]
    (distillation) as unlabelled batches plus those scores; examples with neither (PCP's texts) as unlabelled batches."""

    def __init__(self, pad_token_id: int) -> None:
        self.labelled, self.pool = PadCollator(pad_token_id, "classification"), UnlabelledCollator(pad_token_id)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if "label" in examples[0]:
            return self.labelled(examples)
        if "soft_labels" not in examples[0]:
            return self.pool(examples)
        return {**self.pool(examples), "soft_labels": torch.tensor([example["soft_labels"] for example in examples])}


class SoftLabelledDataset(TokenizedDataset):
    """Examples of a store, each with a row of `soft_labels` (aligned with `indices`) instead of a label."""

    def __init__(self, store: dict[str, torch.Tensor], indices: Sequence[int], soft_labels: torch.Tensor) -> None:
        super().__init__({name: column for name, column in store.items() if name != "label"}, indices)
        if soft_labels.shape[0] != len(self.indices):
            raise DataConfigError(f"Got soft labels for {soft_labels.shape[0]} examples but the pool has {len(self.indices)}; "
                                  "score the pool of the same data (same dataset, splits and shots).")
        self.soft_labels = soft_labels.float()

    def __getitem__(self, position: int) -> dict[str, Any]:
        return {**super().__getitem__(position), "soft_labels": self.soft_labels[position].tolist()}


class FewShotClassificationData(ClassificationData):
    """`ClassificationData` whose training set is k seeded examples per class; the rest of it is an unlabelled pool.

    Args:
        shots_per_class: How many training examples of each class (k); every class gets exactly k.
        shot_seed: Seed of the draw: the same seed gives the same shots, another seed other shots.
            The splits themselves follow `split_seed`, so validation and test do not change with it.
        max_unlabelled: Keep only this many pool examples (a seeded subset: the split's shuffled order); null: all.
            PET's ensemble scores the whole pool with every pattern model, so on a CPU a smaller pool saves hours.
        pool_from: Where the unlabelled pool comes from: "train" (the training split's examples that are not
            shots: PET's D) or "test" (the test split's inputs, labels dropped: transductive fine-tuning, whose
            language-model term then reads the very inputs the run is tested on; the training rest is unused).
        template: The pattern (PET's P): a format string with the `{text}` slot, e.g. "{text} Topic:" for a
            causal LM (the answer is the next token) or "{text} Topic: [MASK]." for a masked LM.
        **kwargs: Everything else of `ClassificationData` (dataset, tokenizer, text_column, label_column,
            label_names, max_length, batch_size, val_size, test_size, split_seed, ...). `max_train_examples`,
            if set, first cuts the training split; the shots and the pool come from what is left.

    After `setup()`, `datasets["train"]` holds the shots, `datasets["unlabelled"]` the pool (examples
    without a `label`) and `unlabelled_dataloader()` serves it as `{"input_ids", "attention_mask"}` batches.
    PET's later stages change the training set: `add_pseudo_labelled` adds pool examples with labels an
    ensemble gave them (iPET), `train_on_soft_labels` trains on the whole pool with a teacher's scores
    (distillation); `ordered_dataloader` serves a split in its stored order (for scores to line up).

    Example::

        dm = FewShotClassificationData("bbc_news", tokenizer="smollm2-135m", template="{text}\\nTopic:",
                                       shots_per_class=10, shot_seed=0)
        dm.setup()
        assert len(dm.datasets["train"]) == 10 * len(dm.label_names)
    """

    def __init__(self, dataset: Union[str, Any] = "trec6", shots_per_class: int = 10, shot_seed: int = 0,
                 template: str = "{text}", max_unlabelled: Optional[int] = None,
                 pool_from: Literal["train", "test"] = "train", **kwargs: Any) -> None:
        if isinstance(shots_per_class, bool) or not isinstance(shots_per_class, int) or shots_per_class < 1:
            raise DataConfigError(f"shots_per_class must be a positive integer (examples per class), got {shots_per_class!r}.")
        if isinstance(shot_seed, bool) or not isinstance(shot_seed, int):
            raise DataConfigError(f"shot_seed must be an integer, got {shot_seed!r}.")
        if max_unlabelled is not None and (isinstance(max_unlabelled, bool) or not isinstance(max_unlabelled, int)
                                           or max_unlabelled < 0):
            raise DataConfigError(f"max_unlabelled must be an integer >= 0 or null (the whole pool), got {max_unlabelled!r}.")
        if pool_from not in POOL_SOURCES:
            raise DataConfigError(f"pool_from must be 'train' (the training rest) or 'test' (the test inputs), got {pool_from!r}.")
        super().__init__(dataset, template=template, **kwargs)
        self.max_unlabelled, self.pool_from = max_unlabelled, pool_from
        self.shots_per_class = shots_per_class
        self.shot_seed = shot_seed

    def setup(self, stage: Optional[str] = None) -> None:
        if self.datasets:
            return
        super().setup(stage)
        train = self.datasets["train"]
        labels = train.store["label"][train.indices].tolist()
        shots, rest = pick_shots(labels, self.label_names, self.shots_per_class, self.shot_seed)
        unlabelled_store = {name: column for name, column in train.store.items() if name != "label"}
        self.datasets["train"] = TokenizedDataset(train.store, [train.indices[p] for p in shots])
        pool = [train.indices[p] for p in rest]
        if self.pool_from == "test":
            pool = list(self.datasets["test"].indices)
            if not pool:
                raise DataConfigError("pool_from='test' takes the unlabelled pool from the test split's inputs, but the "
                                      "test split is empty; give the data a test split (test_size > 0) or use pool_from: train.")
        # The pool's store has no label column: nothing downstream can read a pool example's label.
        self.datasets[UNLABELLED] = TokenizedDataset(unlabelled_store, pool[: self.max_unlabelled])

    def pool_size(self) -> int:
        """How many unlabelled examples the pool holds (after `setup()`)."""
        self._require_setup()
        return len(self.datasets[UNLABELLED])

    def pool_identity(self) -> list[int]:
        """The pool's example positions in the tokenized store: equal for runs that share dataset, splits and shots."""
        self._require_setup()
        return list(self.datasets[UNLABELLED].indices)

    def add_pseudo_labelled(self, positions: Sequence[int], labels: Sequence[int]) -> None:
        """Train on the shots plus the pool examples at `positions` (repeats allowed) labelled `labels` (iPET)."""
        self._require_setup()
        if len(positions) != len(labels):
            raise DataConfigError(f"Got {len(positions)} pool positions but {len(labels)} labels; give one label per position.")
        shots, pool = self.datasets["train"], self.datasets[UNLABELLED]
        store = dict(shots.store)
        store["label"] = store["label"].clone()  # the pool's own labels are never read: each is overwritten below
        chosen = [pool.indices[p] for p in positions]
        if chosen:
            store["label"][torch.tensor(chosen)] = torch.tensor(list(labels), dtype=store["label"].dtype)
        self.datasets["train"] = TokenizedDataset(store, [*shots.indices, *chosen])

    def train_on_soft_labels(self, soft_labels: torch.Tensor) -> None:
        """Train on the whole pool, each example with its row of `soft_labels` [pool, classes] (PET's distillation)."""
        self._require_setup()
        pool = self.datasets[UNLABELLED]
        self.datasets["train"] = SoftLabelledDataset(pool.store, pool.indices, soft_labels)

    def train_on_texts(self, token_ids: Sequence[Sequence[int]]) -> None:
        """Train on these token sequences without labels (PCP's filled-in patterns); batches are `{input_ids, attention_mask}`."""
        self._require_setup()
        if not token_ids:
            raise DataConfigError("train_on_texts got no texts; give it at least one token sequence.")
        self.datasets["train"] = TokenizedDataset(flatten(token_ids, "input_ids"), range(len(token_ids)))

    def collator(self) -> Any:
        return FewShotCollator(self.pad_token_id)

    def ordered_dataloader(self, split: str, batch_size: Optional[int] = None) -> DataLoader:
        """`split` ("train", "test" or "unlabelled") in its stored order, so scores of several models line up row by row."""
        self._require_setup()
        if split not in ORDERED_SPLITS:
            raise DataConfigError(f"ordered_dataloader serves {list(ORDERED_SPLITS)}, not {split!r}.")
        collate = UnlabelledCollator(self.pad_token_id) if split == UNLABELLED else self.collator()
        return DataLoader(self.datasets[split], batch_size=batch_size or self.eval_batch_size, shuffle=False,
                          collate_fn=collate)

    def _require_setup(self) -> None:
        if not self.datasets:
            raise DataConfigError(f"Call {type(self).__name__}.setup() before asking for dataloaders.")

    def unlabelled_dataloader(self, batch_size: Optional[int] = None, shuffle: bool = True) -> Union[DataLoader, list]:
        """The unlabelled pool in batches of `batch_size` (default: the training batch size), in `order_seed`'s order."""
        self._require_setup()
        data = self.datasets[UNLABELLED]
        if len(data) == 0:
            return []
        sampler = LengthBucketBatchSampler(data.lengths(), batch_size or self.batch_size, shuffle=shuffle,
                                           seed=self.order_seed, megabatch_batches=50 if self.bucket_by_length else 1)
        return DataLoader(data, batch_sampler=sampler, collate_fn=UnlabelledCollator(self.pad_token_id),
                          num_workers=self.num_workers, generator=torch.Generator().manual_seed(self.order_seed))
