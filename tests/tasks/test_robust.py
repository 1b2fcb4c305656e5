"""RobustPrompt: task loss + divergence between the class distributions under original and paraphrased instructions."""

import json
import math
from functools import partial

import lightning as L
import pytest
import torch

from lightning_peft import zoo
from lightning_peft.data.paraphrase import ParaphraseClassificationData
from lightning_peft.methods.iapt import IAPT
from lightning_peft.modules.base import FineTuneModule
from lightning_peft.tasks import CausalLMSFT, HeadClassification, TaskConfigError, VerbalizerClassification
from lightning_peft.tasks.robust import RobustPrompt, divergence
from tests.conftest import tiny_causal_lm

LABELS = ["negative", "positive"]
TEXTS = ["Review: dull and long. Sentiment:", "Review: lovely. Sentiment:"]
PARAPHRASES = ["Is this review positive? dull and long. Answer:", "Is this review positive? lovely. Answer:"]


@pytest.fixture(scope="module")
def tokenizer():
    return zoo.load_tokenizer("tiny-llama")


def _robust(tokenizer, **kwargs):
    task = RobustPrompt(VerbalizerClassification(label_words={"negative": "bad", "positive": "good"}), **kwargs)
    task.bind(tokenizer, LABELS)
    return task


def _encode(tokenizer, texts):
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    return enc.input_ids, enc.attention_mask


def _batch(tokenizer, texts, paraphrases=None):
    ids, mask = _encode(tokenizer, texts)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1])}
    if paraphrases is not None:
        batch["paraphrase_input_ids"], batch["paraphrase_attention_mask"] = _encode(tokenizer, paraphrases)
    return batch


@pytest.mark.parametrize("kind", ["kl", "js"])
def test_identical_paraphrase_adds_nothing(tokenizer, kind):
    model = tiny_causal_lm().eval()
    task = _robust(tokenizer, weight=5.0, divergence=kind)
    robust = task.step(model, _batch(tokenizer, TEXTS, TEXTS))
    inner = task.task.step(model, _batch(tokenizer, TEXTS))
    torch.testing.assert_close(robust.loss, inner.loss, rtol=0, atol=0)
    assert robust.preds.tolist() == inner.preds.tolist() and robust.target.tolist() == [0, 1]


@pytest.mark.parametrize("kind", ["kl", "js"])
def test_paraphrase_adds_weight_times_divergence(tokenizer, kind):
    model = tiny_causal_lm().eval()
    task = _robust(tokenizer, weight=3.0, divergence=kind)
    with torch.no_grad():
        robust = task.step(model, _batch(tokenizer, TEXTS, PARAPHRASES)).loss
        inner = task.task.step(model, _batch(tokenizer, TEXTS)).loss
        gap = divergence(task.task.scores(model, *_encode(tokenizer, TEXTS)),
                         task.task.scores(model, *_encode(tokenizer, PARAPHRASES)), kind)
    assert gap > 0
    torch.testing.assert_close(robust, inner + 3.0 * gap)


def test_divergences_match_their_definitions():
    scores, other = torch.randn(4, 3), torch.randn(4, 3)
    p, q = scores.softmax(-1), other.softmax(-1)
    kl = lambda a, b: (a * (a.log() - b.log())).sum(-1)  # noqa: E731
    torch.testing.assert_close(divergence(scores, other, "kl"), (0.5 * (kl(p, q) + kl(q, p))).mean())
    m = (p + q) / 2
    torch.testing.assert_close(divergence(scores, other, "js"), (0.5 * (kl(p, m) + kl(q, m))).mean())
    extreme = divergence(torch.tensor([[50.0, -50.0]]), torch.tensor([[-50.0, 50.0]]), "js")
    assert extreme <= math.log(2) + 1e-6 and torch.isfinite(divergence(torch.tensor([[50.0, -50.0]]),
                                                                      torch.tensor([[-50.0, 50.0]]), "kl"))


@pytest.mark.parametrize("weight, paraphrase_gets_gradient", [(1.0, True), (0.0, False)])
def test_gradient_flows_through_both_branches(tokenizer, weight, paraphrase_gets_gradient):
    model = tiny_causal_lm()
    embedded = []

    def keep(module, inputs, output):
        output.retain_grad()
        embedded.append(output)

    model.get_input_embeddings().register_forward_hook(keep)
    _robust(tokenizer, weight=weight).step(model, _batch(tokenizer, TEXTS, PARAPHRASES)).loss.backward()
    original, paraphrase = embedded
    assert original.grad.abs().sum() > 0
    assert (paraphrase.grad is not None and paraphrase.grad.abs().sum() > 0) == paraphrase_gets_gradient


def test_evaluation_batches_are_the_inner_tasks(tokenizer):
    model = tiny_causal_lm().eval()
    task = _robust(tokenizer)
    robust, inner = task.step(model, _batch(tokenizer, TEXTS)), task.task.step(model, _batch(tokenizer, TEXTS))
    torch.testing.assert_close(robust.loss, inner.loss, rtol=0, atol=0)
    metrics = task.metrics()
    task.update(metrics, robust)
    assert set(metrics.compute()) == {"acc", "f1"}
    half = _batch(tokenizer, TEXTS, PARAPHRASES)
    del half["paraphrase_attention_mask"]
    with pytest.raises(TaskConfigError, match="needs both"):
        task.step(model, half)


def test_model_loading_is_delegated(tokenizer):
    task = RobustPrompt(HeadClassification())
    task.bind(tokenizer, LABELS)
    assert task.auto_class_name == "AutoModelForSequenceClassification" and task.label_names == LABELS
    assert task.model_kwargs()["num_labels"] == 2
    model = task.auto_class().from_pretrained(zoo.resolve("tiny-llama"), **task.model_kwargs())
    assert task.head_modules(model) == ["score"]
    with pytest.raises(TaskConfigError, match="needs the data's label names"):
        RobustPrompt(VerbalizerClassification()).bind(tokenizer, None)


@pytest.mark.parametrize("make, message", [
    (lambda: RobustPrompt(CausalLMSFT()), "does not expose"),
    (lambda: RobustPrompt(VerbalizerClassification(), weight=-1.0), "weight"),
    (lambda: RobustPrompt(VerbalizerClassification(), weight=float("nan")), "weight"),
    (lambda: RobustPrompt(VerbalizerClassification(), divergence="l2"), "divergence"),
])
def test_bad_config_fails_at_construction(make, message):
    with pytest.raises(TaskConfigError, match=message):
        make()


def test_fit_with_iapt_on_paraphrase_data(tmp_path, monkeypatch, tokenizer):
    """End to end: the paraphrase data, the robust objective and IAPT train together and validate."""
    monkeypatch.setenv("LIGHTNING_PEFT_CACHE", str(tmp_path / "cache"))
    rows = [{"text": f"item {i} " + "word " * (i % 4), "label": LABELS[i % 2]} for i in range(24)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = ParaphraseClassificationData(["Review: {text} Sentiment:", "Is this positive? {text} Answer:"],
                                        dataset=str(tmp_path / "data.jsonl"), tokenizer=tokenizer, label_names=LABELS,
                                        val_size=4, test_size=0, batch_size=4, max_length=16)
    module = FineTuneModule(backbone="tiny-llama", method=IAPT(bottleneck=8), label_names=LABELS,
                            task=RobustPrompt(VerbalizerClassification(label_words={"negative": "bad", "positive": "good"})),
                            optimizer=partial(torch.optim.AdamW, lr=1e-2))
    trainer = L.Trainer(accelerator="cpu", max_steps=3, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
                        num_sanity_val_steps=0, limit_val_batches=1, val_check_interval=3)
    trainer.fit(module, datamodule=data)
    assert set(module.groups) == {"prompt"}
    assert torch.isfinite(trainer.callback_metrics["train/loss"]) and "val/acc" in trainer.callback_metrics
