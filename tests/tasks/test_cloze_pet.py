"""What PET adds to the cloze task: patterns with the `{mask}` slot, the auxiliary LM loss, and the distillation task."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForMaskedLM

from lightning_peft import zoo
from lightning_peft.constants import IGNORE_INDEX
from lightning_peft.tasks import ClozeClassification, DistillationClassification, TaskConfigError
from lightning_peft.tasks.losses import distillation_kl
from tests.conftest import tiny_causal_lm

LABELS = ["sport", "politics", "tech"]


def _bound(backbone: str, **kwargs) -> ClozeClassification:
    task = ClozeClassification({"sport": "football"}, **kwargs)
    task.bind(zoo.load_tokenizer(backbone), LABELS)
    return task


def test_a_pattern_becomes_the_data_template_of_either_lm():
    causal, masked = _bound("tiny-llama"), _bound("tiny-bert", lm="masked")
    assert causal.template_for("{text}\nTopic: {mask}") == "{text}\nTopic:"  # the answer is the next token
    assert causal.template_for("{text} It is about {mask}  ") == "{text} It is about"
    assert masked.template_for("{mask} news: {text}") == "[MASK] news: {text}"
    assert masked.template_for("{text}\nTopic: {mask}.").format(text="x") == "x\nTopic: [MASK]."


@pytest.mark.parametrize("lm, pattern, match", [
    ("causal", "{text}\nTopic:", "0 answer slots; write {mask} exactly once"),
    ("masked", "{text} {mask} or {mask}", "2 answer slots"),
    ("causal", "{mask} news: {text}", "causal LM answers with the next token; end the pattern with {mask}"),
])
def test_a_pattern_without_a_usable_slot_is_one_sentence(lm, pattern, match):
    task = _bound("tiny-bert" if lm == "masked" else "tiny-llama", lm=lm)
    with pytest.raises(TaskConfigError, match=match.replace("{", r"\{").replace("}", r"\}")):
        task.template_for(pattern)


def test_causal_lm_loss_is_the_next_token_loss_on_the_unpadded_text():
    tok = zoo.load_tokenizer("tiny-llama")
    task, model = _bound("tiny-llama"), tiny_causal_lm().eval()
    enc = tok(["a long unlabelled news text about the match", "short one"], padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = task.lm_loss(model, {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask})
        logits = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask).logits
    labels = enc.input_ids.masked_fill(enc.attention_mask == 0, IGNORE_INDEX)
    expected = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_masked_lm_loss_masks_about_15_percent_of_the_text_tokens_only():
    tok = zoo.load_tokenizer("tiny-bert")
    task = _bound("tiny-bert", lm="masked")
    model = AutoModelForMaskedLM.from_pretrained(zoo.resolve("tiny-bert"))
    enc = tok(["word " * 200, "short"], padding=True, return_tensors="pt")
    seen = {}

    def record(module, args, kwargs):
        seen.update(kwargs)

    model.register_forward_pre_hook(record, with_kwargs=True)
    torch.manual_seed(0)
    loss = task.lm_loss(model, {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask})
    chosen = seen["labels"].ne(IGNORE_INDEX)
    assert torch.isfinite(loss) and loss.requires_grad
    special = torch.isin(enc.input_ids, torch.tensor(tok.all_special_ids)) | enc.attention_mask.eq(0)
    assert not (chosen & special).any()  # never padding, [CLS] or [SEP]
    assert 0.08 < chosen.sum() / (~special).sum() < 0.22
    assert seen["input_ids"][chosen].eq(tok.mask_token_id).float().mean() > 0.6  # 80% of the chosen become [MASK]
    assert torch.equal(seen["labels"][chosen], enc.input_ids[chosen])


def test_a_masked_lm_draw_that_chooses_no_token_is_a_zero_loss_not_nan():
    tok = zoo.load_tokenizer("tiny-bert")
    task = _bound("tiny-bert", lm="masked")
    model = AutoModelForMaskedLM.from_pretrained(zoo.resolve("tiny-bert"))
    enc = tok(["a", "b"], return_tensors="pt")  # one text token each: 15% chooses neither about 72% of the time
    losses = []
    for seed in range(8):
        torch.manual_seed(seed)
        loss = task.lm_loss(model, {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask})
        loss.backward()  # PCP's pre-training backpropagates this loss alone, empty draw or not
        losses.append(float(loss))
    assert all(loss == loss for loss in losses), losses  # no NaN
    assert 0.0 in losses and any(loss > 0 for loss in losses), losses  # empty draws give 0, the others a real loss
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_distillation_is_kl_at_the_temperature_and_plain_ce_on_labelled_batches():
    student, teacher = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.5, 1.5, -0.5]])
    p_teacher = (teacher / 2).softmax(-1)
    expected = (p_teacher * (p_teacher.log() - (student / 2).log_softmax(-1))).sum() * 4
    torch.testing.assert_close(distillation_kl(student, teacher, 2.0), expected)
    assert float(distillation_kl(teacher, teacher, 2.0)) == pytest.approx(0.0, abs=1e-6)

    class Head(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            return type("Out", (), {"logits": student.expand(len(input_ids), -1)})()

    task = DistillationClassification(temperature=2.0)
    ids, mask = torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.long)
    soft = task.step(Head(), {"input_ids": ids, "attention_mask": mask, "soft_labels": teacher})
    hard = task.step(Head(), {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([1])})
    torch.testing.assert_close(soft.loss, expected)
    torch.testing.assert_close(hard.loss, F.cross_entropy(student, torch.tensor([1])))
    with pytest.raises(TaskConfigError, match="temperature must be a positive number"):
        DistillationClassification(temperature=0)
