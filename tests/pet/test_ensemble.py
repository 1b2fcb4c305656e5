"""PET's weighted ensemble and iPET's next-generation training sets (timoschick/pet, `pet/modeling.py`)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from lightning_peft.pet import ScoredModel, ipet_training_set, mean_std, weighted_scores


def _model(name: str, scores: list[list[float]], weight: float) -> ScoredModel:
    return ScoredModel(name, torch.tensor(scores), weight)


def test_ensemble_is_the_accuracy_weighted_mean_of_the_scores():
    a = _model("a", [[1.0, 0.0], [0.0, 3.0]], weight=0.5)
    b = _model("b", [[-1.0, 2.0], [4.0, 1.0]], weight=0.25)
    expected = (0.5 * a.pool_scores + 0.25 * b.pool_scores) / 0.75
    assert torch.allclose(weighted_scores([a, b]), expected)
    zero = [_model("a", [[1.0, 0.0]], 0.0), _model("b", [[3.0, 2.0]], 0.0)]
    assert torch.allclose(weighted_scores(zero), torch.tensor([[2.0, 1.0]]))  # no division by zero: a plain mean


def _pool_models(count: int, pool: int = 60, classes: int = 3) -> list[ScoredModel]:
    generator = torch.Generator().manual_seed(0)
    return [ScoredModel(f"m{i}", torch.randn(pool, classes, generator=generator) * 3, 0.2 + 0.1 * i) for i in range(count)]


def test_ipet_set_is_class_balanced_grows_by_the_scale_and_uses_the_ensembles_labels():
    others = _pool_models(4)
    positions, labels, info = ipet_training_set(others, [2, 2, 2], generation=1, share=0.25, scale=5, seed=3)
    assert Counter(labels) == {0: 8, 1: 8, 2: 8}  # |T| * (5^1 - 1) new examples, split as T is
    assert info == {"labellers": 1, "short_classes": 0}  # round(4 * 0.25) models label the set
    # the labels are the argmax of the chosen model's scores: one of the four
    assert any(all(int(m.pool_scores[p].argmax()) == label for p, label in zip(positions, labels)) for m in others)
    again = ipet_training_set(others, [2, 2, 2], generation=1, share=0.25, scale=5, seed=3)
    assert again[:2] == (positions, labels)
    second = ipet_training_set(others, [2, 2, 2], generation=2, share=1.0, scale=5, seed=3)
    assert Counter(second[1]) == {0: 48, 1: 48, 2: 48} and second[2]["labellers"] == 4  # 2 * (25 - 1), repeats allowed
    assert max(Counter(second[0]).values()) > 1  # 144 examples from a pool of 60: some come more than once


def test_a_class_no_model_predicts_gets_no_examples_and_is_reported():
    scores = torch.tensor([[5.0, 0.0, 0.0]] * 10 + [[0.0, 5.0, 0.0]] * 10)
    positions, labels, info = ipet_training_set([ScoredModel("a", scores, 1.0)], [1, 1, 1], generation=1, seed=0)
    assert Counter(labels) == {0: 4, 1: 4} and info["short_classes"] == 1
    assert all(p < 10 for p, label in zip(positions, labels) if label == 0)


def test_mean_std_is_the_sample_standard_deviation():
    assert mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    assert mean_std([0.5]) == (0.5, 0.0)
