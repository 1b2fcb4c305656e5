"""Adversarial fine-tuning (FreeLB, SMART) as a switchable part of the classification objective."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_peft import zoo
from lightning_peft.methods import Lora, PromptTuning
from lightning_peft.tasks import (SMART, FreeLB, HeadClassification, TaskConfigError, TaskOutput, VerbalizerClassification,
                                  left_align)
from lightning_peft.tasks.adversarial_perturbation import EmbeddingPerturbation
from tests.conftest import tiny_causal_lm
from tests.helpers import read_losses

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "configs/encoders/adversarial_minilm_sms_spam.yaml"
LABELS = ["ham", "spam"]
TEXTS = ["win a free prize now, call this number today", "see you at lunch", "urgent: claim your reward", "ok"]


def _batch(tokenizer) -> dict[str, torch.Tensor]:
    encoded = tokenizer(TEXTS, padding=True, return_tensors="pt")
    return {"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask, "labels": torch.tensor([1, 0, 1, 0])}


@pytest.fixture(scope="module")
def bert():
    """tiny-bert with a head, in eval mode (no dropout: losses are deterministic), and a padded batch."""
    tokenizer = zoo.load_tokenizer("tiny-bert")
    task = _head(tokenizer)
    model = task.auto_class().from_pretrained(zoo.resolve("tiny-bert"), **task.model_kwargs()).eval()
    return tokenizer, model, _batch(tokenizer), _head


@pytest.fixture(scope="module")
def llama():
    """tiny-llama scored by verbalizer, in eval mode, and a padded batch."""
    tokenizer = zoo.load_tokenizer("tiny-llama")
    return tokenizer, tiny_causal_lm().eval(), _batch(tokenizer), _verbalizer


def _head(tokenizer, adversarial=None) -> HeadClassification:
    task = HeadClassification(adversarial=adversarial)
    task.bind(tokenizer, LABELS)
    return task


def _verbalizer(tokenizer, adversarial=None) -> VerbalizerClassification:
    task = VerbalizerClassification(adversarial=adversarial)
    task.bind(tokenizer, LABELS)
    return task


@pytest.fixture(params=["bert", "llama"], ids=["tiny-bert head", "tiny-llama verbalizer"])
def classifier(request):
    return request.getfixturevalue(request.param)


def test_off_or_without_gradients_the_objective_is_the_plain_cross_entropy(bert):
    tokenizer, model, batch, _ = bert
    expected = F.cross_entropy(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                               batch["labels"])
    plain = _head(tokenizer).step(model, batch).loss
    assert torch.equal(plain, expected)
    with torch.no_grad():  # validation and test: the clean input, whatever the settings
        assert torch.equal(_head(tokenizer, FreeLB()).step(model, batch).loss, plain)
        assert torch.equal(_head(tokenizer, SMART()).step(model, batch).loss, plain)
    # one pass from an unperturbed start is the plain objective
    assert torch.equal(_head(tokenizer, FreeLB(steps=1, init_magnitude=0)).step(model, batch).loss, plain)


def test_each_freelb_ascent_step_raises_the_loss(classifier):
    """From a zero start, the k-th pass sees an embedding moved up the loss gradient, so L_0 < L_1 < L_2."""
    tokenizer, model, batch, make = classifier
    clean = make(tokenizer).step(model, batch).loss
    two = make(tokenizer, FreeLB(steps=2, step_size=0.05, init_magnitude=0)).step(model, batch).loss  # (L0 + L1) / 2
    three = make(tokenizer, FreeLB(steps=3, step_size=0.05, init_magnitude=0)).step(model, batch).loss  # (L0 + L1 + L2) / 3
    assert clean < two < three


def test_the_freelb_parameter_gradient_is_the_mean_of_the_gradients_at_each_perturbation(bert):
    """Algorithm 1: g = (1/K) sum_t grad_theta L(X + delta_t), each delta_t a constant for the parameters."""
    tokenizer, model, batch, _ = bert
    freelb, plain = FreeLB(steps=2, step_size=0.05, init_magnitude=0), _head(tokenizer)
    params = list(model.parameters())

    def loss_at(start):
        noise = EmbeddingPerturbation(model, start)
        with noise:
            return noise.run(lambda: plain.step(model, batch).loss), noise

    first, noise = loss_at(lambda embeds, mask: torch.zeros_like(embeds))
    (ascent,) = torch.autograd.grad(first, noise.delta, retain_graph=True)
    moved = freelb.ascend(noise.delta, ascent, noise.mask)
    second, _ = loss_at(lambda embeds, mask: moved)
    expected = torch.autograd.grad((first + second) / 2, params)
    got = torch.autograd.grad(_head(tokenizer, freelb).step(model, batch).loss, params)
    for want, have in zip(expected, got):
        torch.testing.assert_close(have, want)


def test_smart_adds_a_positive_smoothness_term_scaled_by_its_weight(bert):
    tokenizer, model, batch, make = bert
    clean = make(tokenizer).step(model, batch).loss
    terms = []
    for weight in (1.0, 2.0):
        torch.manual_seed(0)  # the same initial noise for both weights
        smart = SMART(weight=weight, noise_std=1e-2, step_size=0.1, max_norm=0.1)
        terms.append(make(tokenizer, smart).step(model, batch).loss - clean)
    assert terms[0] > 0
    torch.testing.assert_close(terms[1], 2 * terms[0])


def test_gradient_reaches_the_trainable_parameters_only_and_the_model_is_clean_afterwards(bert):
    tokenizer, base, batch, _ = bert
    task = _head(tokenizer, FreeLB(steps=2, init_magnitude=0.1))
    adapted = Lora(r=4, target_modules=["query", "value"]).apply(copy.deepcopy(base), task.head_modules(base))
    model = adapted.model.eval()
    trainable = {id(p) for group in adapted.groups.values() for p in group.values()}
    before = task.scores(model, batch["input_ids"], batch["attention_mask"]).detach()
    task.step(model, batch).loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    frozen = [name for name, p in model.named_parameters() if id(p) not in trainable]
    assert frozen and all(grads[name] is None for name in frozen)  # the word embeddings among them
    assert all(p.grad is not None for p in model.parameters() if id(p) in trainable)
    assert any(p.grad.abs().sum() > 0 for p in model.parameters() if id(p) in trainable)
    assert torch.equal(task.scores(model, batch["input_ids"], batch["attention_mask"]), before)


def test_the_perturbation_covers_the_real_tokens_in_the_layout_the_model_reads(llama):
    """The verbalizer left-aligns its batch: the random start is zero on padding there, not in the batch's layout."""
    tokenizer, model, batch, _ = llama
    task = _verbalizer(tokenizer)
    noise = EmbeddingPerturbation(model, FreeLB(init_magnitude=1.0).start)
    with noise:
        noise.run(lambda: task.scores(model, batch["input_ids"], batch["attention_mask"]))
    _, aligned = left_align(batch["input_ids"], batch["attention_mask"])
    assert torch.equal(noise.mask, aligned.float())
    assert (noise.delta[aligned == 0] == 0).all() and (noise.delta[aligned == 1] != 0).all()


def test_a_soft_prompt_method_is_perturbed_on_its_input_tokens_and_its_prompt_trains(llama):
    tokenizer, base, batch, _ = llama
    adapted = PromptTuning(num_virtual_tokens=3).apply(copy.deepcopy(base))
    model = adapted.model.eval()
    task = _verbalizer(tokenizer, FreeLB(steps=2, step_size=0.05, init_magnitude=0))
    clean = _verbalizer(tokenizer).step(model, batch).loss
    loss = task.step(model, batch).loss
    assert loss > clean
    loss.backward()
    prompt = [p for group in adapted.groups.values() for p in group.values()]
    assert prompt and all(p.grad is not None and p.grad.abs().sum() > 0 for p in prompt)
    noise = EmbeddingPerturbation(model, FreeLB().start)
    with noise:
        noise.run(lambda: task.scores(model, batch["input_ids"], batch["attention_mask"]))
    assert noise.delta.shape[:2] == batch["input_ids"].shape  # the tokens only, not the 3 prompt vectors


def test_freelb_ascent_steps_have_the_step_size_and_stay_in_the_ball():
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    grad = torch.randn(2, 3, 4)
    step = FreeLB(step_size=0.3).ascend(torch.zeros(2, 3, 4), grad, mask)
    torch.testing.assert_close(step.flatten(1).norm(dim=1), torch.full((2,), 0.3))
    assert (step[0, 2] == 0).all()  # no step on padding
    bounded = FreeLB(step_size=5.0, max_norm=0.5).ascend(torch.zeros(2, 3, 4), grad, mask)
    torch.testing.assert_close(bounded.flatten(1).norm(dim=1), torch.full((2,), 0.5))


@pytest.mark.parametrize("build, message", [
    (lambda: FreeLB(steps=0), "FreeLB steps=0 must be a whole number >= 1"),
    (lambda: FreeLB(steps=1.5), "FreeLB steps=1.5 must be a whole number >= 1"),
    (lambda: FreeLB(step_size=0), "FreeLB step_size=0 must be a positive number"),
    (lambda: FreeLB(step_size=-0.1), "FreeLB step_size=-0.1 must be a positive number"),
    (lambda: FreeLB(init_magnitude=-1), "FreeLB init_magnitude=-1 must be >= 0"),
    (lambda: FreeLB(max_norm=0), "FreeLB max_norm=0 must be a positive number"),
    (lambda: SMART(weight=0), "SMART weight=0 must be a positive number"),
    (lambda: SMART(noise_std=-1e-5), "SMART noise_std=-1e-05 must be a positive number"),
    (lambda: SMART(step_size=0), "SMART step_size=0 must be a positive number"),
    (lambda: SMART(max_norm=0), "SMART max_norm=0 must be a positive number"),
    (lambda: SMART(steps=0), "SMART steps=0 must be a whole number >= 1"),
], ids=lambda value: value if isinstance(value, str) else None)
def test_bad_settings_are_refused_at_construction(build, message):
    with pytest.raises(TaskConfigError, match=message):
        build()


class _NoEmbeddingCall(nn.Module):
    """Declares an input embedding layer but its forward never runs it."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.linear = nn.Embedding(10, 4), nn.Linear(4, 2)

    def get_input_embeddings(self) -> nn.Module:
        return self.embed

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)


@pytest.mark.parametrize("model, message", [
    (nn.Linear(4, 2), "Linear has no get_input_embeddings"),
    (_NoEmbeddingCall(), "never ran its input embedding layer"),
])
def test_a_model_without_token_embeddings_to_perturb_is_refused(model, message):
    labels = torch.tensor([0, 1])
    with pytest.raises(TaskConfigError, match=message):
        FreeLB().objective(model, lambda: model(torch.randn(2, 4)),
                           lambda scores: TaskOutput(loss=F.cross_entropy(scores, labels)))


def test_the_recipe_runs_with_fast_dev_run_on_a_tiny_model(tmp_path):
    from lightning_peft.cli import main

    data = tmp_path / "sms.jsonl"
    data.write_text("".join(json.dumps({"text": f"{TEXTS[i % 4]} {i}", "label": LABELS[i % 2]}) + "\n" for i in range(24)))
    losses = tmp_path / "losses.jsonl"
    callbacks = [{"class_path": "tests.helpers.LossRecorder", "init_args": {"path": str(losses)}}]
    main(["fit", "--config", str(RECIPE), "--model.init_args.backbone", "tiny-bert", "--data.init_args.dataset", str(data),
          "--data.init_args.val_size", "4", "--data.init_args.test_size", "4", "--data.init_args.batch_size", "4",
          "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.enable_progress_bar", "false",
          "--trainer.fast_dev_run", "true", "--test_after_fit", "false", "--trainer.callbacks", json.dumps(callbacks)])
    (loss,) = read_losses(losses)
    assert math.isfinite(loss) and loss > 0
