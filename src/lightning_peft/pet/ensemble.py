"""The arithmetic between PET's stages: the weighted ensemble and iPET's next-generation training sets.

Schick & Schuetze 2021, "Exploiting Cloze Questions for Few Shot Text Classification and Natural
Language Inference" (EACL; arXiv:2001.07676), sections 3.2-3.3, as the reference code does it
(timoschick/pet, `pet/modeling.py`, reduction "wmean"):

- Ensemble: the average of the pattern models' class scores (their logits, not probabilities),
  each model weighted by its accuracy on the training set before training.
- iPET: each model of generation g+1 trains on the labelled set T plus pool examples labelled by a
  random share (25%) of the *other* models of generation g (their weighted ensemble, softmax,
  argmax), |T| * (5^(g+1) - 1) new examples, split over the classes as T is; per class they are drawn
  without replacement with probability proportional to the ensemble's confidence, the class's
  candidates repeated when there are fewer than needed.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ScoredModel:
    """One trained pattern model as the ensemble sees it: its class scores on the pool and its weight."""

    name: str
    pool_scores: torch.Tensor  # [pool, classes]
    weight: float  # accuracy on the labelled set before training


def weighted_scores(models: list[ScoredModel]) -> torch.Tensor:
    """PET's "wmean": sum_m w_m * scores_m / sum_m w_m over the models' pool scores [pool, classes].

    Models that all score 0 before training weigh equally (plain mean) instead of dividing by zero.
    """
    if not models:
        raise ValueError("weighted_scores needs at least one model.")
    weights = torch.tensor([m.weight for m in models], dtype=torch.float32)
    if float(weights.sum()) <= 0:
        weights = torch.ones_like(weights)
    stacked = torch.stack([m.pool_scores.float() for m in models])
    return (stacked * weights[:, None, None]).sum(0) / weights.sum()


def ipet_training_set(others: list[ScoredModel], shots_per_class: list[int], generation: int, share: float = 0.25,
                      scale: float = 5.0, seed: int = 0) -> tuple[list[int], list[int], dict[str, int]]:
    """Pool positions and labels for one model of iPET generation `generation` (1, 2, ...).

    Args:
        others: The previous generation's models other than this one.
        shots_per_class: How many labelled examples T has of each class (the new set keeps these proportions).
        generation: The generation being trained; its set grows to |T| * scale^generation in all.
        share: Fraction of `others` that label the set (at least one model).
        scale: Growth factor per generation (PET: 5).
        seed: Seed of the choice of models and of the draw.

    Returns:
        (positions into the pool, their labels, {"labellers": models used, "short_classes": classes the
        ensemble predicted for no pool example, which get no new examples}).
    """
    rng = random.Random(seed)
    chosen = rng.sample(others, k=max(1, min(len(others), round(len(others) * share))))
    probabilities = weighted_scores(chosen).softmax(-1)
    confidence, predicted = probabilities.max(-1)
    generator = torch.Generator().manual_seed(seed)
    positions: list[int] = []
    labels: list[int] = []
    short = 0
    for label, shots in enumerate(shots_per_class):
        wanted = int(round(shots * (math.pow(scale, generation) - 1)))
        candidates = predicted.eq(label).nonzero().flatten()
        if wanted == 0:
            continue
        if len(candidates) == 0:
            short += 1
            continue
        candidates = candidates.repeat(math.ceil(wanted / len(candidates)))  # too few: each may come more than once
        picked = torch.multinomial(confidence[candidates], wanted, replacement=False, generator=generator)
        positions.extend(candidates[picked].tolist())
        labels.extend([label] * wanted)
    return positions, labels, {"labellers": len(chosen), "short_classes": short}


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
