"""Sentence pairs for contrastive few-shot training, sampled as SetFit samples them.

Tunstall et al. 2022, "Efficient Few-Shot Learning Without Prompts" (SetFit), arXiv:2209.11055:
from k labelled shots per class, every pair of shots (each shot with itself included) is a
positive pair (similarity 1) when both have the same label and a negative pair (similarity 0)
otherwise; the sentence encoder is then trained to give positives cosine 1 and negatives 0.

How many pairs are drawn (setfit's `sampler.py`, versions 1.x):

- `num_iterations=N` (the only option, default 20, of setfit 0.x): N x (number of shots) positive
  and as many negative pairs, cycling through each list.
- otherwise `sampling_strategy` (setfit 1.x default "oversampling", `num_iterations` unset):
  "oversampling" draws max(#positive, #negative) of each kind (the smaller list is cycled),
  "undersampling" min(#positive, #negative) of each, "unique" every pair once.

Positives and negatives alternate. setfit shuffles the combinations with a fixed seed (42); here
the order is drawn from `seed`, so another seed gives another cycle through the pairs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import zip_longest
from typing import Literal, Optional

from lightning_peft.data.errors import DataConfigError

SamplingStrategy = Literal["oversampling", "undersampling", "unique"]
STRATEGIES = ("oversampling", "undersampling", "unique")


@dataclass(frozen=True)
class Pair:
    """Two shots (positions in the few-shot training set) and their target cosine similarity."""

    first: int
    second: int
    similarity: float


def pair_counts(positives: int, negatives: int, shots: int, strategy: SamplingStrategy,
                num_iterations: Optional[int]) -> tuple[int, int]:
    """How many positive and negative pairs to draw (see the module docstring)."""
    if num_iterations is not None:
        return num_iterations * shots, num_iterations * shots
    if strategy == "unique":
        return positives, negatives
    chosen = max(positives, negatives) if strategy == "oversampling" else min(positives, negatives)
    return chosen, chosen


def _cycle(pairs: list[Pair], count: int) -> list[Pair]:
    return [pairs[k % len(pairs)] for k in range(count)] if pairs else []


def contrastive_pairs(labels: list[int], strategy: SamplingStrategy = "oversampling",
                      num_iterations: Optional[int] = None, seed: int = 0) -> list[Pair]:
    """The training pairs for shots with these `labels`, positives and negatives alternating.

    Args:
        labels: The class index of every shot, in the order of the few-shot training set.
        strategy: "oversampling", "undersampling" or "unique" (ignored when `num_iterations` is set).
        num_iterations: Pairs per shot and kind; overrides `strategy`.
        seed: Seed of the order in which the pairs are listed (and so cycled).
    """
    check_sampling(strategy, num_iterations)
    combinations = [(i, j) for i in range(len(labels)) for j in range(i, len(labels))]
    random.Random(seed).shuffle(combinations)
    positives = [Pair(i, j, 1.0) for i, j in combinations if labels[i] == labels[j]]
    negatives = [Pair(i, j, 0.0) for i, j in combinations if labels[i] != labels[j]]
    if not negatives:
        raise DataConfigError("Contrastive pairs need shots of at least two classes, but every shot has the same "
                              "label; use data with two or more classes.")
    wanted_pos, wanted_neg = pair_counts(len(positives), len(negatives), len(labels), strategy, num_iterations)
    alternating = zip_longest(_cycle(positives, wanted_pos), _cycle(negatives, wanted_neg))
    return [pair for both in alternating for pair in both if pair is not None]


def check_sampling(strategy: str, num_iterations: Optional[int]) -> None:
    """Refuse an unknown strategy or a non-positive `num_iterations` in one sentence."""
    if strategy not in STRATEGIES:
        raise DataConfigError(f"sampling_strategy={strategy!r} is not one of {list(STRATEGIES)}; pick one "
                              "(SetFit's default is 'oversampling').")
    if num_iterations is not None and (isinstance(num_iterations, bool) or not isinstance(num_iterations, int)
                                       or num_iterations < 1):
        raise DataConfigError(f"num_iterations must be a positive integer (pairs per shot and kind) or null to use "
                              f"sampling_strategy, got {num_iterations!r}.")
