"""`prepend_to_inputs` / `PromptedModel`: a prompt of token embeddings must equal writing those tokens in front."""

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM

from lightning_peft import zoo
from lightning_peft.methods.prompt_inputs import PromptedModel, prepend_to_inputs
from lightning_peft.tasks.classification import left_align
from tests.conftest import tiny_causal_lm

PREFIX = torch.tensor([[11, 12, 13]])


class TokenPrompt(PromptedModel):
    """A prompt made of the embeddings of fixed tokens: the expected output is the base on [tokens; input]."""

    def prompt(self, inputs_embeds, attention_mask):
        prefix = self.get_input_embeddings()(PREFIX.expand(inputs_embeds.shape[0], -1))
        return prefix, inputs_embeds


def _batch():
    ids = torch.randint(20, 1000, (2, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    return ids, mask


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_prompt_equals_tokens_written_in_front(name):
    base = tiny_causal_lm(name).eval()
    ids, _ = _batch()
    labels = ids.clone()
    with torch.no_grad():
        out = TokenPrompt(base)(input_ids=ids, labels=labels)
        ref = base(input_ids=torch.cat([PREFIX.expand(2, -1), ids], 1),
                   labels=torch.cat([torch.full((2, 3), -100), labels], 1))
    torch.testing.assert_close(out.logits, ref.logits)
    torch.testing.assert_close(out.loss, ref.loss)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_left_and_right_padding_give_same_last_token_logits(name):
    """The verbalizer task's call (left-aligned, position_ids, logits_to_keep=1) must match unpadded rows."""
    model = TokenPrompt(tiny_causal_lm(name).eval())
    ids, mask = _batch()
    left_ids, left_mask = left_align(ids, mask)
    with torch.no_grad():
        left = model(input_ids=left_ids, attention_mask=left_mask,
                     position_ids=(left_mask.cumsum(1) - 1).clamp(min=0), logits_to_keep=1).logits[:, -1]
        alone = [model(input_ids=ids[i : i + 1, : int(mask[i].sum())]).logits[0, -1] for i in range(2)]
        right = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(left, torch.stack(alone), atol=1e-5, rtol=1e-5)
    # right padding: the last real token of row 1 sits at prompt length + 4 - 1
    torch.testing.assert_close(right[1, 3 + 3], alone[1], atol=1e-5, rtol=1e-5)


def test_encoder_decoder_prompt_goes_to_encoder_only():
    base = AutoModelForSeq2SeqLM.from_pretrained(zoo.resolve("tiny-t5")).eval()
    ids, mask = _batch()
    labels = torch.tensor([[5, 6], [7, -100]])
    with torch.no_grad():
        out = TokenPrompt(base)(input_ids=ids, attention_mask=mask, labels=labels)
        ref = base(input_ids=torch.cat([PREFIX.expand(2, -1), ids], 1),
                   attention_mask=torch.cat([torch.ones(2, 3, dtype=torch.long), mask], 1), labels=labels)
    assert out.logits.shape[1] == 2  # decoder length untouched
    torch.testing.assert_close(out.logits, ref.logits)


def test_class_labels_pass_unchanged_and_token_labels_are_masked():
    base = tiny_causal_lm()
    prompt, embeds = torch.zeros(2, 3, 64), torch.zeros(2, 5, 64)
    assert prepend_to_inputs(base, prompt, embeds, labels=torch.tensor([0, 1]))["labels"].tolist() == [0, 1]
    kwargs = prepend_to_inputs(base, prompt, embeds, attention_mask=torch.tensor([[0, 1, 1, 1, 1]] * 2),
                               labels=torch.ones(2, 5, dtype=torch.long))
    assert kwargs["labels"][0].tolist() == [-100] * 3 + [1] * 5
    assert kwargs["attention_mask"][0].tolist() == [1, 1, 1, 0, 1, 1, 1, 1]
    assert kwargs["position_ids"][0].tolist() == [0, 1, 2, 2, 3, 4, 5, 6]
    assert "position_ids" not in prepend_to_inputs(base, prompt, embeds)  # model default is already right


def test_caller_position_ids_are_shifted_past_the_prompt_so_packed_restarts_survive():
    base = tiny_causal_lm()
    packed = torch.tensor([[0, 1, 2, 0, 1]])  # two documents in one row
    kwargs = prepend_to_inputs(base, torch.zeros(1, 3, 64), torch.zeros(1, 5, 64), position_ids=packed)
    assert kwargs["position_ids"].tolist() == [[0, 1, 2, 3, 4, 5, 3, 4]]
