"""SetFit's two training phases as one stream of batches: contrastive pairs for the body, then shots for the head.

Tunstall et al. 2022, "Efficient Few-Shot Learning Without Prompts", arXiv:2209.11055. SetFit first
fine-tunes a sentence encoder on pairs of shots (`data/pairs.py`), then trains a classifier on the
embeddings of the shots with the encoder frozen. One pass of the training dataloader is that whole
procedure: `body_epochs` passes over the shuffled pairs (batches marked `phase == BODY`), then
`head_epochs` passes over the shuffled shots (`phase == HEAD`); the module reads the mark and trains
the body or the head. So a recipe runs one trainer epoch (`max_epochs: 1`); validation and test are
ordinary classification batches, as for `FewShotClassificationData`.
"""

from __future__ import annotations

import random
from typing import Any, Optional, Union

import torch
from torch.utils.data import DataLoader, Dataset

from lightning_peft.data.collate import PadCollator, pad_right
from lightning_peft.data.errors import DataConfigError
from lightning_peft.data.fewshot import FewShotClassificationData
from lightning_peft.data.pairs import Pair, SamplingStrategy, check_sampling, contrastive_pairs
from lightning_peft.data.tokenized import TokenizedDataset

BODY, HEAD = "body", "head"  # batch["phase"]: which part of the model the batch trains


class PhasedItems(Dataset):
    """Index `i < len(pairs)`: pair `i` of shots; the rest: shot `i - len(pairs)` with its label."""

    def __init__(self, shots: TokenizedDataset, pairs: list[Pair]) -> None:
        self.shots, self.pairs = shots, pairs

    def __len__(self) -> int:
        return len(self.pairs) + len(self.shots)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < len(self.pairs):
            pair = self.pairs[index]
            return {"phase": BODY, "first": self.shots[pair.first]["input_ids"],
                    "second": self.shots[pair.second]["input_ids"], "similarity": pair.similarity}
        return {"phase": HEAD, **self.shots[index - len(self.pairs)]}


class PhaseCollator:
    """A pair batch of B pairs: `input_ids`/`attention_mask` with the B first texts then the B second
    texts (one forward pass embeds both), and `similarity` [B]; a shot batch: a classification batch."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id
        self.classification = PadCollator(pad_token_id, "classification")

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        phase = items[0]["phase"]
        if phase == HEAD:
            return {"phase": HEAD, **self.classification(items)}
        texts = [item["first"] for item in items] + [item["second"] for item in items]
        return {"phase": BODY, "input_ids": pad_right(texts, self.pad_token_id),
                "attention_mask": pad_right([[1] * len(text) for text in texts], 0),
                "similarity": torch.tensor([item["similarity"] for item in items], dtype=torch.float32)}


def _batches(indices: list[int], size: int, rng: random.Random) -> list[list[int]]:
    order = list(indices)
    rng.shuffle(order)
    return [order[start:start + size] for start in range(0, len(order), size)]


def _count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DataConfigError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return value


class SetFitData(FewShotClassificationData):
    """k shots per class, served as SetFit's contrastive pairs and then as labelled shots for the head.

    Example::

        dm = SetFitData("sms_spam", tokenizer="minilm-l6", shots_per_class=8, shot_seed=0)
        dm.setup()
        len(dm.pairs)  # 144: 72 positive and 72 negative pairs of the 16 shots ("oversampling")

    Args:
        num_iterations: Positive (and as many negative) pairs per shot; overrides `sampling_strategy`
            (setfit 0.x's only option, default 20 there). Null: use `sampling_strategy`.
        sampling_strategy: "oversampling" (setfit 1.x's default), "undersampling" or "unique" (`data/pairs.py`).
        body_epochs: Passes over the pairs (setfit's `num_epochs[0]`, default 1); 0 skips contrastive
            training (a frozen-encoder baseline).
        head_epochs: Passes over the shots for the head: 1 for a logistic-regression head (fitted to convergence on
            its batch); setfit's differentiable head makes 16 (`num_epochs[1]`).
        head_batch_size: Shots per head batch; null: all shots in one batch (what a logistic regression is fitted
            on); setfit's differentiable head takes 2 (`batch_size[1]`). `batch_size` is the pair batch (16).
        pair_seed: Seed of the pair order and of both phases' shuffles; default `shot_seed`.
        **kwargs: Everything else of `FewShotClassificationData` (dataset, shots_per_class, shot_seed, template,
            max_length, batch_size, val_size, test_size, split_seed, ...).
    """

    def __init__(self, dataset: Union[str, Any] = "sms_spam", shots_per_class: int = 8,
                 num_iterations: Optional[int] = None, sampling_strategy: SamplingStrategy = "oversampling",
                 body_epochs: int = 1, head_epochs: int = 1, head_batch_size: Optional[int] = None,
                 pair_seed: Optional[int] = None, **kwargs: Any) -> None:
        check_sampling(sampling_strategy, num_iterations)
        self.body_epochs = _count("body_epochs", body_epochs, 0)
        self.head_epochs = _count("head_epochs", head_epochs, 1)
        self.head_batch_size = None if head_batch_size is None else _count("head_batch_size", head_batch_size, 1)
        if pair_seed is not None:
            _count("pair_seed", pair_seed, 0)
        super().__init__(dataset, shots_per_class=shots_per_class, **kwargs)
        self.num_iterations, self.sampling_strategy = num_iterations, sampling_strategy
        self.pair_seed = self.shot_seed if pair_seed is None else pair_seed
        self.pairs: list[Pair] = []

    def setup(self, stage: Optional[str] = None) -> None:
        if self.datasets:
            return
        super().setup(stage)
        labels = [self.datasets["train"][position]["label"] for position in range(len(self.datasets["train"]))]
        self.pairs = contrastive_pairs(labels, self.sampling_strategy, self.num_iterations, self.pair_seed)

    def plan(self) -> list[list[int]]:
        """Every training batch of the procedure, in order: pair batches, then shot batches (indices of `PhasedItems`)."""
        rng = random.Random(self.pair_seed)
        pairs, shots = range(len(self.pairs)), range(len(self.pairs), len(self.pairs) + len(self.datasets["train"]))
        body = [batch for _ in range(self.body_epochs) for batch in _batches(list(pairs), self.batch_size, rng)]
        size = self.head_batch_size or len(shots)
        head = [batch for _ in range(self.head_epochs) for batch in _batches(list(shots), size, rng)]
        return body + head

    @property
    def body_steps(self) -> int:
        """How many of the planned batches train the body (the rest train the head)."""
        return self.body_epochs * -(-len(self.pairs) // self.batch_size)

    def train_dataloader(self) -> DataLoader:
        if not self.datasets:
            raise DataConfigError(f"Call {type(self).__name__}.setup() before asking for dataloaders.")
        batches = self.plan()
        if self._resume is not None:  # a run resumed mid-procedure skips the batches already trained
            batches, self._resume = batches[self._resume[1]:], None
        return DataLoader(PhasedItems(self.datasets["train"], self.pairs), batch_sampler=batches,
                          collate_fn=PhaseCollator(self.pad_token_id), num_workers=self.num_workers)
