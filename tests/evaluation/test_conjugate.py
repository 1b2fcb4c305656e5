"""Prompt transforms round-trip, the ICL suite is deterministic, and scoring follows the in-context answer."""

import pytest
import torch

from lightning_peft.evaluation import (Identity, Leetspeak, PigLatin, Rot13, Translation, conjugate_report,
                                       icl_accuracy, icl_suite, is_in_context_answer)
from tests.conftest import tiny_causal_lm

TEXTS = ["hello world", "what is 7 plus 12?", "Capitalize every character.", "rhythm yes apple", "WHAT IS 3 TIMES 4?"]


@pytest.mark.parametrize("transform", [Identity(), PigLatin(), Rot13()], ids=lambda t: t.name)
@pytest.mark.parametrize("text", TEXTS)
def test_round_trip(transform, text):
    assert transform.inverse(transform.forward(text)) == text


def test_leetspeak_round_trips_on_its_domain_and_changes_the_text():
    text = "the cat sat on the mat, what is two plus nine?"  # lowercase, no 0/1/3/4/5/7
    assert Leetspeak().forward(text) == "7h3 c47 547 0n 7h3 m47, wh47 15 7w0 plu5 n1n3?"
    assert Leetspeak().inverse(Leetspeak().forward(text)) == text


def test_pig_latin_examples():
    assert PigLatin().forward("hello apple rhythm") == "ello-hay apple-ay -rhythmay"


def test_translation_by_table_and_by_callables():
    es = Translation("es", table={"repeat": "repite", "the": "la", "input": "entrada"})
    assert es.forward("Repeat the input.") == "repite la entrada."
    assert es.inverse(es.forward("repeat the input.")) == "repeat the input."
    upper = Translation("upper", forward=str.upper, inverse=str.lower)
    assert upper.inverse(upper.forward("abc")) == "abc"
    with pytest.raises(ValueError, match="cannot be inverted"):
        Translation("bad", table={"a": "x", "b": "x"})


def test_suite_is_deterministic_and_alternates_tasks():
    first, again = icl_suite(6, seed=3), icl_suite(6, seed=3)
    assert first == again and first != icl_suite(6, seed=4)
    assert [p.task for p in first] == ["repeat", "capitalize"] * 3
    assert all(p.query.startswith("what is ") and p.query.endswith("?") for p in first)
    prompt = first[1].render(Identity())
    assert prompt.startswith("Capitalize every character.\nInput: ") and prompt.endswith(f"Input: {first[1].query}\nOutput:")
    assert prompt.count("Output:") == 3 and first[1].answer == first[1].query.upper()


def test_scoring_on_hand_made_outputs():
    repeat, capitalize = icl_suite(2, seed=0)
    assert is_in_context_answer(f" {repeat.query}\nInput:", repeat, Identity())
    assert not is_in_context_answer(" 19", repeat, Identity())  # answered the instruction instead
    assert not is_in_context_answer("", repeat, Identity())
    assert is_in_context_answer(" " + capitalize.query.upper()[:9], capitalize, Identity())
    assert not is_in_context_answer(" " + capitalize.query, capitalize, Identity())  # repeated, did not capitalize
    pig = PigLatin()
    assert is_in_context_answer(" " + pig.forward(repeat.query)[:14], repeat, pig)
    leet = Leetspeak()  # lossy on case and digits: compared after inverse(forward(answer))
    assert is_in_context_answer(" " + leet.forward(capitalize.answer), capitalize, leet)


def test_conjugate_report_measures_the_recovered_share():
    report = conjugate_report({"original": 0.8, "pig_latin": 0.6}, {"original": 0.2, "pig_latin": 0.5})
    assert report["original/drop"] == pytest.approx(0.6) and report["pig_latin/drop"] == pytest.approx(0.1)
    assert report["pig_latin/recovered"] == pytest.approx(0.5)
    assert "pig_latin/recovered" not in conjugate_report({"original": 0.2, "pig_latin": 0.1}, {"original": 0.3, "pig_latin": 0.1})


def test_icl_accuracy_runs_greedy_generation_on_a_tiny_model():
    from lightning_peft import zoo

    model, tokenizer = tiny_causal_lm().eval(), zoo.load_tokenizer("tiny-llama")
    suite = icl_suite(3)
    with torch.no_grad():
        result = icl_accuracy(model, tokenizer, suite, [Identity(), PigLatin()], max_new_tokens=4)
    assert set(result) == {"original", "pig_latin"} and all(0.0 <= v <= 1.0 for v in result.values())
