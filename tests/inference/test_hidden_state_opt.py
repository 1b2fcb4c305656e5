"""Hidden-state optimisation: the prompt's loss falls, the step budget holds, the weights stay, 0 steps change nothing."""

from __future__ import annotations

import pytest
import torch

from lightning_peft.inference import GenerationSettings, generate_texts, load_model
from lightning_peft.inference.errors import GenerationError
from lightning_peft.inference.hidden_state_opt import HiddenStateOptimisation, optimised_cache


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-llama", "cpu", "float32")


def test_steps_lower_the_loss_of_the_seen_text_within_the_budget_and_leave_the_weights(tiny):
    ids = tiny.tokenizer(["the cat sat on the mat and the dog sat on the log"], return_tensors="pt")
    weights = {name: p.detach().clone() for name, p in tiny.model.named_parameters()}
    calls = []
    handle = tiny.model.register_forward_hook(lambda *args: calls.append(1))
    try:
        _, losses = optimised_cache(tiny.model, ids["input_ids"], ids["attention_mask"], HiddenStateOptimisation(steps=5, lr=0.1))
    finally:
        handle.remove()
    assert len(losses) == 6 and len(calls) == 1 + 5 + 1  # reading the first part, 5 steps, the final loss
    assert losses[-1] < losses[0] - 0.1 and all(b < a for a, b in zip(losses, losses[1:]))
    assert all(torch.equal(p, weights[name]) for name, p in tiny.model.named_parameters())


def test_zero_steps_generate_what_plain_decoding_does_and_steps_change_it(tiny):
    prompts = ["the cat sat on the mat and the dog", "one two three four five six"]
    plain = list(generate_texts(tiny, prompts, GenerationSettings(max_new_tokens=6)))
    assert list(generate_texts(tiny, prompts, GenerationSettings(max_new_tokens=6, hso_steps=0))) == plain
    settings = GenerationSettings(max_new_tokens=6, hso_steps=10, hso_lr=0.5)
    nudged = list(generate_texts(tiny, prompts, settings, batch_size=2))
    assert nudged != plain and all(isinstance(text, str) and text for text in nudged)
    # prompts of different lengths in one call: each answer is the one it gets alone (padding moves no split)
    assert nudged == [next(generate_texts(tiny, [prompt], settings)) for prompt in prompts]


@pytest.mark.parametrize("settings, message", [
    (dict(hso_steps=-1), "step budget must be an integer >= 0"),
    (dict(hso_steps=2, hso_lr=0.0), "learning rate must be > 0"),
    (dict(hso_steps=2, num_beams=3), "num_beams 1"),
])
def test_bad_optimisation_settings_get_one_sentence(settings, message):
    with pytest.raises(GenerationError, match=message):
        GenerationSettings(**settings)
