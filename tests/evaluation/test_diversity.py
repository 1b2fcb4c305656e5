"""Diversity metrics on examples small enough to count by hand."""

from __future__ import annotations

import pytest
import torch

from lightning_peft.evaluation.diversity import (DistinctN, DiversityInputError, PairwiseEmbeddingDistance, SelfBLEU,
                                                 SentenceEncoder, words)


def _value(metric, samples) -> float:
    metric.update(samples)
    return float(metric.compute())


def test_words_lowercase_and_split_punctuation():
    assert words("Hi, Bob. I'm here!") == ["hi", ",", "bob", ".", "i", "'", "m", "here", "!"]


def test_distinct_counts_unique_ngrams_over_a_prompts_samples_then_averages_prompts():
    # prompt 1 unigrams: a cat sat a cat ran -> {a, cat, sat, ran} 4 / 6; bigrams: a-cat, cat-sat, a-cat, cat-ran -> 3 / 4
    # prompt 2: "x y" and "z w" -> all distinct: 1.0 for both orders
    samples = [["a cat sat", "A cat ran"], ["x y", "z w"]]
    assert _value(DistinctN(1), samples) == pytest.approx((4 / 6 + 1.0) / 2)
    assert _value(DistinctN(2), samples) == pytest.approx((3 / 4 + 1.0) / 2)


def test_distinct_accumulates_over_updates_like_one_update():
    metric = DistinctN(2)
    metric.update([["a cat sat", "a cat ran"]])
    metric.update([["x y", "x y"]])  # bigrams x-y twice -> 1 / 2
    assert float(metric.compute()) == pytest.approx((3 / 4 + 1 / 2) / 2)


def test_self_bleu_is_one_for_identical_samples_and_zero_for_disjoint_ones():
    assert _value(SelfBLEU(n_gram=2, smooth=False), [["the cat sat down", "the cat sat down", "the cat sat down"]]) \
        == pytest.approx(1.0)
    assert _value(SelfBLEU(n_gram=2, smooth=False), [["alpha beta gamma", "delta epsilon zeta"]]) == 0.0


def test_self_bleu_scores_each_sample_against_the_others():
    from torchmetrics.functional.text import bleu_score

    group = ["the cat sat on the mat", "the cat ran off", "a dog sat on the mat"]
    expected = sum(float(bleu_score([s], [[o for o in group if o != s]], n_gram=2, smooth=True)) for s in group) / 3
    assert _value(SelfBLEU(), [group]) == pytest.approx(expected)
    assert 0 < expected < 1


def test_embedding_distance_is_mean_one_minus_cosine_over_pairs():
    vectors = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [1.0, 0.0]}  # pairs: a-b 1, a-c 0, b-c 1
    metric = PairwiseEmbeddingDistance(lambda texts: torch.tensor([vectors[t] for t in texts]))
    assert _value(metric, [["a", "b", "c"]]) == pytest.approx(2 / 3)


def test_embedding_distance_with_a_tiny_bert_encoder_is_zero_for_identical_and_positive_otherwise():
    from transformers import AutoModel

    from lightning_peft import zoo

    embed = SentenceEncoder(AutoModel.from_pretrained(zoo.resolve("tiny-bert")), zoo.load_tokenizer("tiny-bert"))
    assert _value(PairwiseEmbeddingDistance(embed), [["same words", "same words"]]) == pytest.approx(0.0, abs=1e-5)
    assert _value(PairwiseEmbeddingDistance(embed), [["the weather is cold", "stock prices rose sharply"]]) > 0.0


@pytest.mark.parametrize("samples", [[["only one"]], ["a string, not a list"]])
def test_a_prompt_with_fewer_than_two_samples_is_refused(samples):
    with pytest.raises(DiversityInputError, match="at least 2 sampled texts"):
        DistinctN(2).update(samples)
