"""Prompt and prefix tuning through peft: groups, init, padding-independence, all three tiny architectures."""

import warnings

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForMaskedLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

from lightning_peft import zoo
from lightning_peft.methods.base import MethodConfigError
from lightning_peft.methods.prompts import PrefixTuning, PromptTuning
from lightning_peft.tasks.classification import left_align
from tests.conftest import tiny_causal_lm


def _model(name):
    if name == "tiny-t5":
        return AutoModelForSeq2SeqLM.from_pretrained(zoo.resolve(name))
    return tiny_causal_lm(name)


def _padded_batch():
    ids = torch.randint(20, 1000, (2, 7), generator=torch.Generator().manual_seed(3))
    return ids, torch.tensor([[1] * 7, [1] * 5 + [0] * 2])


def test_prompt_tuning_trains_only_the_prompt():
    adapted = PromptTuning(num_virtual_tokens=7).apply(tiny_causal_lm())
    assert isinstance(adapted.model, PeftModel)
    assert set(adapted.groups) == {"prompt"}
    assert adapted.num_trainable() == 7 * 64  # m x d
    assert {n for n, p in adapted.model.named_parameters() if p.requires_grad} == adapted.trainable_names()


@pytest.mark.parametrize("tokenizer", [None, "tiny-llama"])
def test_text_init_copies_the_text_embeddings_tiled(tokenizer):
    base = tiny_causal_lm()
    token_ids = zoo.load_tokenizer("tiny-llama")("great movie", add_special_tokens=False)["input_ids"]
    expected = base.get_input_embeddings().weight[torch.tensor(token_ids * 5)[:7]].detach().clone()
    adapted = PromptTuning(num_virtual_tokens=7, init="text", init_text="great movie", tokenizer=tokenizer).apply(base)
    torch.testing.assert_close(next(iter(adapted.groups["prompt"].values())).detach(), expected)


@pytest.mark.parametrize("method", [PromptTuning(num_virtual_tokens=5), PrefixTuning(num_virtual_tokens=5)],
                         ids=["prompt", "prefix"])
@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_left_aligned_verbalizer_call_matches_unpadded_and_right_padded(name, method):
    """The verbalizer task's call (left-aligned, position_ids, logits_to_keep=1) must not depend on padding."""
    model = method.apply(tiny_causal_lm(name)).model.eval()
    ids, mask = _padded_batch()
    left_ids, left_mask = left_align(ids, mask)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # peft's "Position ids are not supported" must not fire
        left = model(input_ids=left_ids, attention_mask=left_mask,
                     position_ids=(left_mask.cumsum(1) - 1).clamp(min=0), logits_to_keep=1).logits[:, -1]
        alone = model(input_ids=ids[1:, :5]).logits[0, -1]
        right = model(input_ids=ids, attention_mask=mask).logits[1]
    torch.testing.assert_close(left[1], alone, atol=1e-5, rtol=1e-5)
    prompt_positions = 5 if isinstance(method, PromptTuning) else 0  # prefix logits cover real tokens only
    torch.testing.assert_close(right[prompt_positions + 4], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("projection", [False, True])
@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-t5"])
def test_prefix_tuning_forward_and_backward(name, projection):
    adapted = PrefixTuning(num_virtual_tokens=4, prefix_projection=projection, encoder_hidden_size=16).apply(_model(name))
    ids = torch.randint(20, 1000, (2, 6))
    labels = ids[:, :3].clone() if name == "tiny-t5" else ids
    adapted.model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss.backward()
    grads = [p.grad for p in adapted.groups["prompt"].values()]
    assert len(grads) == (5 if projection else 1)  # embedding (+ two linear layers with biases)
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_prompt_tuning_on_t5_prompts_the_encoder():
    adapted = PromptTuning(num_virtual_tokens=4).apply(_model("tiny-t5"))
    assert adapted.num_trainable() == 4 * 64  # no unused decoder copy
    ids = torch.randint(20, 1000, (2, 6))
    out = adapted.model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids[:, :3].clone())
    assert out.logits.shape[:2] == (2, 3)  # decoder length unchanged
    out.loss.backward()
    assert next(iter(adapted.groups["prompt"].values())).grad.abs().sum() > 0


def test_sequence_classifier_with_right_padding_pools_the_last_real_token():
    pad = zoo.load_tokenizer("tiny-llama").pad_token_id
    base = AutoModelForSequenceClassification.from_pretrained(zoo.resolve("tiny-llama"), num_labels=3, pad_token_id=pad)
    adapted = PromptTuning(num_virtual_tokens=4).apply(base)
    assert set(adapted.groups) == {"prompt", "head"}
    ids, mask = _padded_batch()
    model = adapted.model.eval()
    with torch.no_grad():
        batch = model(ids, mask).logits
        alone = model(input_ids=ids[1:, :5]).logits[0]
    torch.testing.assert_close(batch[1], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kwargs", [{"num_virtual_tokens": 0}, {"init": "text"}, {"init_text": "x"}, {"init": "words"}])
def test_bad_prompt_tuning_arguments_rejected_at_construction(kwargs):
    with pytest.raises(MethodConfigError):
        PromptTuning(**kwargs)


def test_masked_lm_is_refused_in_one_sentence():
    with pytest.raises(MethodConfigError, match="not BertForMaskedLM; load the backbone with AutoModelForCausalLM"):
        PromptTuning(num_virtual_tokens=2).apply(AutoModelForMaskedLM.from_pretrained(zoo.resolve("tiny-bert")))


def test_prompt_tuning_passes_the_callers_position_ids_shifted_past_the_prompt():
    """peft would drop them; packed rows (positions restarting per document) need them."""
    model = PromptTuning(num_virtual_tokens=3).apply(tiny_causal_lm()).model
    seen = {}
    model.get_base_model().register_forward_pre_hook(
        lambda module, args, kwargs: seen.update(kwargs), with_kwargs=True)
    with torch.no_grad():
        model(torch.randint(20, 1000, (1, 5)), position_ids=torch.tensor([[0, 1, 2, 0, 1]]))
    assert seen["position_ids"].tolist() == [[0, 1, 2, 3, 4, 5, 3, 4]]


def test_prefix_tuning_with_gradient_checkpointing_is_refused_in_one_sentence():
    model = tiny_causal_lm()
    model.gradient_checkpointing_enable()
    with pytest.raises(MethodConfigError, match="turn gradient checkpointing off, or use prompt tuning / DePT"):
        PrefixTuning(num_virtual_tokens=2).apply(model)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_prefix_from_text_reads_as_if_the_text_preceded_the_input(name):
    """Li & Liang's Section 7.2 initialisation: before training, the prefix is the model's own cache of the text."""
    tokenizer = zoo.load_tokenizer(name)
    text_ids = tokenizer("classify the question type", add_special_tokens=False)["input_ids"]
    base = tiny_causal_lm(name).eval()
    ids = torch.randint(20, 1000, (1, 6), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = base(input_ids=torch.cat([torch.tensor([text_ids]), ids], 1)).logits[0, len(text_ids):]
    method = PrefixTuning(num_virtual_tokens=len(text_ids), init="text", init_text="classify the question type",
                          tokenizer=name)
    model = method.apply(base).model.eval()
    with torch.no_grad():
        prefixed = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]
        torch.testing.assert_close(prefixed, expected, atol=1e-4, rtol=1e-4)
        random = PrefixTuning(num_virtual_tokens=len(text_ids)).apply(tiny_causal_lm(name).eval()).model.eval()
        assert not torch.allclose(random(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0], expected, atol=1e-2)


@pytest.mark.parametrize("kwargs, message", [
    ({"init": "text"}, "needs init_text exactly when init='text'"),
    ({"init_text": "x"}, "needs init_text exactly when init='text'"),
    ({"init": "words"}, "init='words' is unknown"),
    ({"init": "text", "init_text": "x", "prefix_projection": True}, "set prefix_projection: false"),
])
def test_bad_prefix_tuning_init_rejected_at_construction(kwargs, message):
    with pytest.raises(MethodConfigError, match=message):
        PrefixTuning(**kwargs)


def test_prefix_from_text_on_an_encoder_decoder_is_refused_in_one_sentence():
    with pytest.raises(MethodConfigError, match="use init: random for encoder-decoder models"):
        PrefixTuning(num_virtual_tokens=2, init="text", init_text="summarize").apply(_model("tiny-t5"))
