"""n-gram style prior: interpolated probabilities, the exact logit shift, lambda 0, the on-disk cache."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_peft import zoo
from lightning_peft.inference import GenerationSettings, generate_texts, load_model
from lightning_peft.inference.errors import GenerationError
from lightning_peft.inference.ngram_prior import NgramCounts, NgramPrior, NgramPriorProcessor, ngram_counts

CORPUS = [0, 1, 2, 0, 1, 3, 0, 1, 2]  # "a b c a b d a b c" as token ids; vocabulary of 5 (id 4 never seen)


def test_interpolated_distributions_sum_to_one_and_match_hand_computed_values():
    prior = NgramPrior(NgramCounts.count(CORPUS, vocab_size=5, order=3), vocab_size=5)
    p1, p2, p3 = prior.distributions([0, 1])
    for p in (p1, p2, p3):
        assert float(p.sum()) == pytest.approx(1.0, abs=1e-12) and bool((p > 0).all())
    assert float(p1[4]) == pytest.approx(1 / (9 + 5))  # add-one: unseen token
    assert float(p1[0]) == pytest.approx((3 + 1) / (9 + 5))
    # context "b" (id 1) is followed by c twice and d once: c(h)=3, 2 types, Witten-Bell weight 3/5
    assert float(p2[2]) == pytest.approx(3 / 5 * 2 / 3 + 2 / 5 * float(p1[2]))
    # context "a b" likewise (the same three continuations)
    assert float(p3[3]) == pytest.approx(3 / 5 * 1 / 3 + 2 / 5 * float(p2[3]))
    unseen = prior.distributions([4, 4])  # an unseen context falls back to the lower order
    assert torch.equal(unseen[2], unseen[0]) and torch.equal(unseen[1], unseen[0])


def test_processor_shifts_logits_by_exactly_lambda_times_the_summed_log_probabilities():
    counts = NgramCounts.count(CORPUS, vocab_size=5, order=3)
    scores = torch.randn(2, 6)  # logits may be wider than the tokenizer's vocabulary
    input_ids = torch.tensor([[3, 0, 1], [2, 2, 4]])
    shifted = NgramPriorProcessor(counts, style_lambda=0.3)(input_ids, scores.clone())
    prior = NgramPrior(counts, vocab_size=6)
    for row, context in enumerate([[0, 1], [2, 4]]):
        expected = 0.3 * sum(p.log() for p in prior.distributions(context))
        torch.testing.assert_close(shifted[row] - scores[row], expected.float())
    assert float(shifted[0, 2] - scores[0, 2]) == pytest.approx(0.3 * sum(math.log(float(p[2])) for p in prior.distributions([0, 1])),
                                                                 rel=1e-5)


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-llama", "cpu", "float32")


@pytest.fixture
def style_file(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNING_PEFT_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "style.txt"
    path.write_text("the cat sat on the mat. the dog sat on the log. " * 20)
    return path


def test_lambda_zero_leaves_generation_unchanged_and_a_large_lambda_writes_in_the_corpus_style(tiny, style_file):
    prompts = ["hello there my friend", "a b"]
    plain = list(generate_texts(tiny, prompts, GenerationSettings(max_new_tokens=8)))
    off = list(generate_texts(tiny, prompts, GenerationSettings(max_new_tokens=8, style_corpus=str(style_file), style_lambda=0.0)))
    strong = list(generate_texts(tiny, prompts, GenerationSettings(max_new_tokens=8, style_corpus=str(style_file),
                                                                   style_lambda=5.0)))
    assert off == plain
    corpus_words = set(style_file.read_text().replace(".", " ").split())
    for text in strong:
        assert set(text.replace(".", " ").split()) <= corpus_words, text
    assert strong != plain


def test_counts_are_cached_on_disk_by_corpus_tokenizer_and_order(tmp_path, style_file, monkeypatch):
    tokenizer = zoo.load_tokenizer("tiny-llama")
    first = ngram_counts(str(style_file), tokenizer, order=3, cache_dir=tmp_path / "ngram")
    assert len(list((tmp_path / "ngram").glob("*.safetensors"))) == 1

    def no_recount(*args, **kwargs):
        raise AssertionError("counted again instead of reading the cache")

    monkeypatch.setattr(NgramCounts, "count", no_recount)
    again = ngram_counts(str(style_file), tokenizer, order=3, cache_dir=tmp_path / "ngram")
    assert torch.equal(again.unigram, first.unigram)
    assert {k: (t.tolist(), c.tolist()) for k, (t, c) in again.rows[3].items()} == \
           {k: (t.tolist(), c.tolist()) for k, (t, c) in first.rows[3].items()}
    monkeypatch.undo()
    ngram_counts(str(style_file), tokenizer, order=2, cache_dir=tmp_path / "ngram")  # another order: another entry
    style_file.write_text("an entirely different corpus.")
    ngram_counts(str(style_file), tokenizer, order=3, cache_dir=tmp_path / "ngram")  # another text: another entry
    assert len(list((tmp_path / "ngram").glob("*.safetensors"))) == 3


def test_a_catalog_entry_is_a_style_corpus(tmp_path):
    counts = ngram_counts("lee_news", zoo.load_tokenizer("tiny-llama"), order=2, cache_dir=tmp_path)
    assert counts.unigram.sum() > 10_000 and len(counts.rows[2]) > 1_000


@pytest.mark.parametrize("settings, message", [
    (dict(style_lambda=-0.1), "lambda must be >= 0"),
    (dict(num_beams=0), "num_beams must be an integer >= 1"),
    (dict(style_order=7), "order must be one of"),
])
def test_bad_prior_settings_get_one_sentence(settings, message):
    with pytest.raises(GenerationError, match=message):
        GenerationSettings(**settings)
