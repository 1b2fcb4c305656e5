"""Conditional beam search: the classifier term reorders beams, telescopes to one term, and is refused when it cannot work."""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessorList

from lightning_peft.inference import GenerationSettings, generate_texts, load_model
from lightning_peft.inference.beam_classifier import AttributeClassifier, ConditionalBeamProcessor, LastHiddenState
from lightning_peft.inference.beam_classifier_training import BeamClassifierRecipe, head_inputs, repeat_rate, train
from lightning_peft.inference.errors import GenerationError


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-llama", "cpu", "float32")


def _beam(runnable, ids, classifier, beta):
    hidden = LastHiddenState(runnable.model)
    try:
        out = runnable.model.generate(**ids, max_new_tokens=6, num_beams=4, do_sample=False,
                                      pad_token_id=runnable.tokenizer.eos_token_id,
                                      logits_processor=LogitsProcessorList([ConditionalBeamProcessor(classifier, hidden, beta)]))
    finally:
        hidden.remove()
    return out[0]


def _score(runnable, classifier, sequence):
    """log p(attribute | x, y<=T-1): the term the final beam score carries (the last token's state comes after)."""
    with torch.no_grad():
        return float(classifier(head_inputs(runnable.model, sequence[None, :-1])[0, -1]))


def test_conditional_beam_search_moves_the_answer_toward_the_classifier(tiny):
    ids = tiny.tokenizer(["hello there my friend"], return_tensors="pt")
    classifier = AttributeClassifier(64)
    plain = _beam(tiny, ids, classifier, beta=0.0)
    assert len(set(plain[ids["input_ids"].shape[1]:].tolist())) == 1  # the random tiny model loops on one token
    against = head_inputs(tiny.model, plain[None, :-1])[0, -1]
    with torch.no_grad():  # a classifier that dislikes the state the looping answer ends in
        classifier.linear.weight.copy_(-5 * against / against.norm())
        classifier.linear.bias.zero_()
    steered = _beam(tiny, ids, classifier, beta=1.0)
    assert not torch.equal(steered, plain)
    assert _score(tiny, classifier, steered) > _score(tiny, classifier, plain) + 1.0
    assert torch.equal(_beam(tiny, ids, classifier, beta=0.0), plain)  # beta 0: plain beam search


class _FixedState:
    """Stands in for LastHiddenState: the hidden state of each row, set by the test."""

    value: torch.Tensor | None = None


def test_increments_telescope_so_the_beam_score_holds_one_classifier_term():
    classifier = AttributeClassifier(3)
    state = _FixedState()
    processor = ConditionalBeamProcessor(classifier, state, beta=2.0)
    total = torch.zeros(1)
    states = torch.randn(4, 1, 3)
    for step in range(4):  # one row whose prefix grows by one token each step
        state.value = states[step]
        total += processor(torch.arange(step + 2)[None], torch.zeros(1, 5))[:, 0]
    with torch.no_grad():
        expected = 2.0 * (classifier(states[3]) - classifier(states[0]))
    torch.testing.assert_close(total, expected)


def test_a_classifier_for_another_hidden_size_is_refused_before_generating(tiny, tmp_path):
    AttributeClassifier(32).save(tmp_path / "clf")
    settings = GenerationSettings(max_new_tokens=3, num_beams=2, beam_classifier=str(tmp_path / "clf"))
    with pytest.raises(GenerationError, match="hidden states of size 32, but this model's are 64"):
        list(generate_texts(tiny, ["hello"], settings))


@pytest.mark.parametrize("settings, message", [
    (dict(beta=-1.0, num_beams=2), "beta .* must be >= 0"),
    (dict(num_beams=1, beam_classifier="x"), "num_beams >= 2"),
    (dict(num_beams=2, beam_classifier="no/such/folder"), "holds no beam classifier"),
])
def test_bad_beam_settings_get_one_sentence(settings, message):
    with pytest.raises(GenerationError, match=message):
        GenerationSettings(**settings)


def test_repeat_rate_tells_a_loop_from_text():
    assert repeat_rate([1, 2, 3, 4, 5, 6, 7, 8]) == 0.0
    assert repeat_rate([1, 2] * 8) > 0.8


def test_the_training_recipe_saves_a_classifier_the_beam_search_loads(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(" ".join(f"word{i} of sentence {i % 13}." for i in range(600)))
    recipe = BeamClassifierRecipe(model="tiny-llama", dataset=str(text), output=str(tmp_path / "clf"), texts=6,
                                  prefix_tokens=8, length=32, model_negatives=True, epochs=30)
    report = train(recipe)
    assert set(report) >= {"val_accuracy_real", "val_accuracy_degenerate"} and 0 < report["negatives_share"] < 1
    assert AttributeClassifier.load(tmp_path / "clf", hidden_size=64).hidden_size == 64
