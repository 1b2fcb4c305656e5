"""The MNR loss against a hand computation and sentence-transformers; retrieval metrics on a hand-made example."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_peft.tasks import TaskConfigError
from lightning_peft.tasks.embedding import MNREmbedding, mnr_loss, retrieval_scores


def test_mnr_loss_is_the_in_batch_softmax_over_scaled_cosines_by_hand():
    anchors = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    positives = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    # cosines: a0.p0 = 1, a0.p1 = 1/sqrt2, a1.p0 = 0, a1.p1 = 1/sqrt2
    c = 1 / math.sqrt(2)
    row0 = -(20 * 1.0) + math.log(math.exp(20 * 1.0) + math.exp(20 * c))
    row1 = -(20 * c) + math.log(math.exp(0.0) + math.exp(20 * c))
    assert mnr_loss(anchors, positives).item() == pytest.approx((row0 + row1) / 2, rel=1e-5)
    assert mnr_loss(anchors, positives, scale=1.0).item() == pytest.approx(
        (-(1.0) + math.log(math.exp(1.0) + math.exp(c)) - c + math.log(1.0 + math.exp(c))) / 2, rel=1e-5)


def test_mnr_loss_equals_sentence_transformers_on_the_same_embeddings():
    from sentence_transformers.sentence_transformer import losses  # a dependency (pyproject.toml)

    generator = torch.Generator().manual_seed(0)
    anchors, positives = torch.randn(16, 32, generator=generator), torch.randn(16, 32, generator=generator)
    reference = losses.MultipleNegativesRankingLoss(model=None, scale=20.0)
    expected = reference.compute_loss_from_embeddings([anchors, positives], None)
    assert torch.allclose(mnr_loss(anchors, positives), expected, atol=1e-5)


def test_retrieval_scores_on_a_hand_made_example():
    # Three queries; document i belongs to query i. Query 0 ranks doc 0 first, query 1 ranks doc 1 second
    # (doc 0 first), query 2 ranks doc 2 third. Domains: queries 0, 1 in "a", query 2 in "b".
    queries = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [1.0, 0.0, 0.0]])
    documents = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [-1.0, 0.0, 0.1]])
    scores = retrieval_scores(queries, documents, torch.tensor([0, 0, 1]), ["a", "b", "c"])
    assert scores["recall@1"] == pytest.approx(1 / 3)
    assert scores["recall@10"] == pytest.approx(1.0)
    assert scores["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    # Within domain "a" query 1 still ranks doc 0 first; in "b" query 2 has one candidate, its own.
    assert (scores["a/recall@1"], scores["a/mrr"]) == (pytest.approx(0.5), pytest.approx(0.75))
    assert (scores["b/recall@1"], scores["b/mrr"]) == (pytest.approx(1.0), pytest.approx(1.0))
    assert not any(key.startswith("c/") for key in scores)  # no example of domain "c"


def test_bad_task_settings_are_one_sentence():
    with pytest.raises(TaskConfigError, match="scale=0"):
        MNREmbedding(scale=0)
    with pytest.raises(TaskConfigError, match="pooling='max'"):
        MNREmbedding(pooling="max")
