"""LiST's re-weighting of pseudo-labelled examples by one virtual SGD step (plain PyTorch, no Lightning).

Wang, Mukherjee, Liu, Gao, Awadallah & Gao 2022, "LiST: Lite Prompted Self-training Makes
Parameter-efficient Few-shot Learners" (NAACL Findings; arXiv:2110.06274). A teacher's soft labels
on unlabelled text are noisy; LiST weighs each pseudo-labelled example by how much one small SGD step
on it would lower the loss on the labelled shots, and drops the examples that would raise it (the
meta re-weighting of Ren, Zeng, Yang & Urtasun 2018, "Learning to Reweight Examples for Robust Deep
Learning", arXiv:1803.09050).

The look-ahead weights are applied with `torch.func.functional_call`, so the model's own parameters
are never modified; `WithParameters` is the same device for scoring with a teacher's weights.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

LossOf = Callable[[nn.Module], torch.Tensor]  # model -> a loss ([batch] per example, or a scalar)


class WithParameters(nn.Module):
    """`model` run with `parameters` in place of its own of the same names (the others are its own).

    Nothing is written into `model`: a teacher's weights, or the virtual weights of a look-ahead step,
    serve one call each while the model keeps its own. Tasks call it as they call the model
    (`task.scores(WithParameters(model, teacher), ...)`); `eval()` / `train()` reach the model.
    """

    def __init__(self, model: nn.Module, parameters: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.replaced = parameters  # a plain dict: these are not parameters of the wrapper
        self.training = model.training  # the wrapper's mode is the model's (what `train(mode)` gives back)

    def forward(self, *args, **kwargs):
        return functional_call(self.model, self.replaced, args, kwargs)


def soft_label_losses(scores: torch.Tensor, soft_labels: torch.Tensor) -> torch.Tensor:
    """Each example's KL(soft_labels || softmax(scores)) over the classes: [batch] (LiST's loss on pseudo-labels).

    `scores` are the student's unnormalised class scores [batch, classes]; `soft_labels` the teacher's class
    probabilities (rows summing to 1). Its gradient is that of the cross-entropy with soft targets.
    """
    return F.kl_div(scores.float().log_softmax(-1), soft_labels.float(), reduction="none").sum(-1)


def example_weights(model: nn.Module, parameters: dict[str, torch.Tensor], unlabelled_losses: LossOf,
                    labelled_loss: LossOf, virtual_lr: float = 1.0) -> torch.Tensor:
    """Weights [batch] of pseudo-labelled examples from one virtual SGD step (LiST, after Ren et al. 2018).

    With theta the trainable `parameters` (names as in `model.named_parameters()`), l_i the loss of
    pseudo-labelled example i (`unlabelled_losses`) and L the loss on labelled examples (`labelled_loss`):

        eps = 0 (one per example, differentiable)
        theta' = theta - virtual_lr * d/dtheta sum_i eps_i l_i(theta)       (equal to theta in value)
        w~_i = max(-dL(theta') / deps_i, 0)
        w = w~ / sum(w~), or all zeros when sum(w~) = 0

    At eps = 0, -dL(theta')/deps_i = virtual_lr * <grad L(theta), grad l_i(theta)>: an example counts when
    a step on it would also lower the labelled loss. `virtual_lr` cancels in the normalisation (it is kept
    for the shape of the paper's update). All zeros means no pseudo-labelled example helps the shots
    now: the caller then trains on the labelled loss alone. (LiST's code divides by sum + 1e-6 instead,
    which differs from ours only when the sum is about 1e-6 or less.)

    Runs `model` in eval mode (as LiST does: no dropout in the look-ahead) and restores its mode; the
    returned weights carry no gradient. Attention runs on PyTorch's math kernel here, the one whose
    backward can itself be differentiated.
    """
    was_training = model.training
    model.eval()
    try:
        with sdpa_kernel([SDPBackend.MATH]):
            names = list(parameters)
            values = [parameters[name] for name in names]
            losses = unlabelled_losses(WithParameters(model, dict(zip(names, values))))
            epsilon = torch.zeros_like(losses, requires_grad=True)
            grads = torch.autograd.grad((epsilon * losses).sum(), values, create_graph=True, allow_unused=True)
            virtual = {name: value if grad is None else value - virtual_lr * grad
                       for name, value, grad in zip(names, values, grads)}
            loss = labelled_loss(WithParameters(model, virtual))
            (grad_eps,) = torch.autograd.grad(loss, epsilon, allow_unused=True)
    finally:
        model.train(was_training)
    if grad_eps is None:  # no trainable parameter reaches the losses: no example helps
        return torch.zeros_like(losses).detach()
    raw = (-grad_eps.detach()).clamp(min=0)
    total = raw.sum()
    return raw / total if total > 0 else raw
