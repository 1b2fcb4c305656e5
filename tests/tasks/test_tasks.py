import pytest
import torch

from lightning_peft import zoo
from lightning_peft.tasks import (CausalLMSFT, HeadClassification, TaskConfigError, VerbalizerClassification,
                                  left_align)
from tests.conftest import tiny_causal_lm

LABELS = ["negative", "positive"]


def _batch(tokenizer, texts, labels):
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    return {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask, "labels": torch.tensor(labels)}


def test_left_align_moves_padding_and_keeps_tokens():
    ids = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    new_ids, new_mask = left_align(ids, mask)
    assert new_ids.tolist() == [[0, 5, 6, 7], [0, 0, 8, 9]]
    assert new_mask.tolist() == [[0, 1, 1, 1], [0, 0, 1, 1]]


def test_verbalizer_scores_equal_full_logits_at_last_real_token():
    tok = zoo.load_tokenizer("tiny-llama")
    task = VerbalizerClassification(label_words={"negative": "bad", "positive": "good"})
    task.bind(tok, LABELS)
    model = tiny_causal_lm().eval()
    batch = _batch(tok, ["a long review that goes on and on", "short"], [0, 1])
    out = task.step(model, batch)
    # reference: each sequence alone, unpadded, full logits at its last token
    word_ids = [tok.encode(" bad", add_special_tokens=False)[0], tok.encode(" good", add_special_tokens=False)[0]]
    reference = []
    for row in range(2):
        n = int(batch["attention_mask"][row].sum())
        reference.append(model(input_ids=batch["input_ids"][row : row + 1, :n]).logits[0, -1, word_ids])
    reference = torch.stack(reference)
    assert out.preds.tolist() == reference.argmax(-1).tolist()
    expected_loss = torch.nn.functional.cross_entropy(reference, batch["labels"])
    torch.testing.assert_close(out.loss, expected_loss, atol=1e-4, rtol=1e-4)


def test_verbalizer_rejects_labels_it_does_not_cover_and_clashing_words():
    tok = zoo.load_tokenizer("tiny-llama")
    with pytest.raises(TaskConfigError, match="not in the data's labels"):
        VerbalizerClassification(label_words={"neutral": "meh"}).bind(tok, LABELS)
    with pytest.raises(TaskConfigError, match="same token"):
        VerbalizerClassification(label_words={"negative": "good", "positive": "good"}).bind(tok, LABELS)
    with pytest.raises(TaskConfigError, match="needs the data's label names"):
        VerbalizerClassification().bind(tok, None)


def test_head_classification_builds_head_with_label_count():
    tok = zoo.load_tokenizer("tiny-llama")
    task = HeadClassification()
    task.bind(tok, LABELS)
    model = task.auto_class().from_pretrained(zoo.resolve("tiny-llama"), **task.model_kwargs())
    assert task.head_modules(model) == ["score"]
    out = task.step(model, _batch(tok, ["x y z", "w"], [1, 0]))
    assert out.preds.shape == (2,)


def test_sft_perplexity_counts_only_response_tokens():
    tok = zoo.load_tokenizer("tiny-llama")
    task = CausalLMSFT()
    task.bind(tok, None)
    model = tiny_causal_lm()
    ids = torch.randint(10, 1000, (1, 8))
    labels = ids.clone()
    labels[0, :5] = -100  # prompt
    out = task.step(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    assert int(out.tokens) == 3
    metrics = task.metrics()
    task.update(metrics, out)
    assert float(metrics.compute()["perplexity"]) == pytest.approx(float(out.loss.exp()), rel=1e-5)
