"""LiST's re-weighting maths: weights from one virtual SGD step, checked by hand and against per-example gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_peft import zoo
from lightning_peft.methods import BottleneckAdapter
from lightning_peft.tasks import ClozeClassification, example_weights, soft_label_losses
from tests.conftest import tiny_causal_lm
from tests.helpers import sample_input_ids

LABELS = ["sport", "politics", "tech"]


def _scalar_model() -> nn.Linear:
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)  # theta = 1
    return model


def _squared_errors(targets: list[float]):
    """l_i(theta) = (theta * 1 - y_i)^2: d l_i / d theta = 2 (theta - y_i)."""
    return lambda model: (model(torch.ones(len(targets), 1)).squeeze(-1) - torch.tensor(targets)) ** 2


def test_a_hand_computed_case():
    # Labelled loss L = (theta - 2)^2, so dL/dtheta = -2 at theta = 1; pseudo-labelled targets 3, 0, 2 give
    # d l_i/d theta = -4, 2, -2. Then -dL(theta')/d eps_i = lr * (-2) * (-4, 2, -2) = (8, -4, 4) * lr,
    # clamped at 0 and normalised: (2/3, 0, 1/3), whatever the lr.
    model = _scalar_model()
    for lr in (1.0, 0.01):
        weights = example_weights(model, dict(model.named_parameters()), _squared_errors([3.0, 0.0, 2.0]),
                                  lambda m: _squared_errors([2.0])(m).sum(), virtual_lr=lr)
        torch.testing.assert_close(weights, torch.tensor([2 / 3, 0.0, 1 / 3]))
    assert model.weight.item() == 1.0 and model.weight.grad is None  # the virtual step changed nothing


def test_no_helpful_example_gives_all_zero_weights():
    # Every pseudo-labelled gradient is 2, the labelled one -2: a step on any example raises the labelled loss.
    model = _scalar_model()
    weights = example_weights(model, dict(model.named_parameters()), _squared_errors([0.0, 0.0]),
                              lambda m: _squared_errors([2.0])(m).sum())
    assert weights.tolist() == [0.0, 0.0]


def test_soft_label_loss_is_zero_where_the_student_agrees_and_positive_elsewhere():
    soft = torch.tensor([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1]])
    losses = soft_label_losses(torch.stack([soft[0].log() + 5.0, torch.zeros(3)]), soft)  # scores up to a constant
    assert losses[0].item() == pytest.approx(0.0, abs=1e-6) and losses[1].item() > 0.1


def test_on_a_cloze_model_the_weights_are_the_normalised_alignment_with_the_shots_gradient():
    """At eps = 0, -dL(theta')/d eps_i = lr * <grad L, grad l_i>: computed here one example at a time."""
    task = ClozeClassification({"sport": "football", "tech": "technology"})
    task.bind(zoo.load_tokenizer("tiny-llama"), LABELS)
    adapted = BottleneckAdapter(non_linearity="identity", init_std=0.02, reduction_factor=8).apply(tiny_causal_lm())
    model, params = adapted.model.train(), {n: p for group in adapted.groups.values() for n, p in group.items()}
    before = {name: p.detach().clone() for name, p in params.items()}
    pool, shots = sample_input_ids(5, 6), sample_input_ids(3, 6) + 3
    soft = torch.softmax(torch.randn(5, 3, generator=torch.Generator().manual_seed(1)) * 3, -1)
    labels = torch.tensor([0, 1, 2])

    def pool_losses(m):
        return soft_label_losses(task.scores(m, pool, torch.ones_like(pool)), soft)

    def shot_loss(m):
        return task.step(m, {"input_ids": shots, "attention_mask": torch.ones_like(shots), "labels": labels}).loss

    weights = example_weights(model, params, pool_losses, shot_loss, virtual_lr=0.1)
    assert model.training  # the look-ahead runs in eval mode and gives the caller's mode back
    for name, p in params.items():
        torch.testing.assert_close(p.detach(), before[name], rtol=0, atol=0)

    model.eval()
    names = list(params)
    shots_grad = torch.autograd.grad(shot_loss(model), [params[n] for n in names])
    alignment = []
    for loss in pool_losses(model):
        grads = torch.autograd.grad(loss, [params[n] for n in names], retain_graph=True)
        alignment.append(sum((g * s).sum() for g, s in zip(grads, shots_grad)))
    expected = torch.stack(alignment).clamp(min=0)
    assert 0 < int((expected > 0).sum()) < 5  # the case holds examples that help and examples that do not
    torch.testing.assert_close(weights, expected / expected.sum(), rtol=1e-3, atol=1e-6)
