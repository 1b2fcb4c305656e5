"""SetFit's pair sampling: which pairs, how many of each kind, in which order."""

from __future__ import annotations

import pytest

from lightning_peft.data import DataConfigError
from lightning_peft.data.pairs import contrastive_pairs

# 8 shots, 4 per class: 36 pairs with self-pairs; 2 x (4*5/2) = 20 positive, 4*4 = 16 negative
LABELS = [0, 1, 0, 1, 1, 0, 0, 1]


def _kinds(pairs):
    return [pair.similarity for pair in pairs]


@pytest.mark.parametrize("strategy, num_iterations, positives, negatives", [
    ("oversampling", None, 20, 20),   # max of the two, the smaller list cycled
    ("undersampling", None, 16, 16),  # min of the two
    ("unique", None, 20, 16),         # every pair once
    ("unique", 3, 24, 24),            # num_iterations x shots of each kind, whatever the strategy
])
def test_counts_follow_setfits_strategies(strategy, num_iterations, positives, negatives):
    pairs = contrastive_pairs(LABELS, strategy, num_iterations, seed=0)
    assert _kinds(pairs).count(1.0) == positives and _kinds(pairs).count(0.0) == negatives


def test_positive_means_same_label_and_kinds_alternate():
    pairs = contrastive_pairs(LABELS, "oversampling", seed=0)
    assert all((LABELS[p.first] == LABELS[p.second]) == (p.similarity == 1.0) for p in pairs)
    assert _kinds(pairs)[:32] == [1.0, 0.0] * 16
    unique = contrastive_pairs(LABELS, "unique", seed=0)
    assert len({(p.first, p.second) for p in unique}) == 36 and all(p.first <= p.second for p in unique)


def test_seeded_order():
    assert contrastive_pairs(LABELS, seed=3) == contrastive_pairs(LABELS, seed=3)
    assert contrastive_pairs(LABELS, seed=3) != contrastive_pairs(LABELS, seed=4)


@pytest.mark.parametrize("labels, strategy, num_iterations, words", [
    (LABELS, "balanced", None, "sampling_strategy='balanced'"),
    (LABELS, "oversampling", 0, "num_iterations must be a positive integer"),
    ([1, 1, 1], "oversampling", None, "at least two classes"),
])
def test_bad_sampling_is_one_sentence(labels, strategy, num_iterations, words):
    with pytest.raises(DataConfigError, match=words):
        contrastive_pairs(labels, strategy, num_iterations)
