"""Adversarial fine-tuning: perturb the input embeddings as part of the classification objective.

One of the fine-tuning tricks of Zhong et al. 2023, "Bag of Tricks for Effective Language Model
Pretraining and Downstream Adaptation: A Case Study on GLUE" (arXiv:2302.09268). Two objectives,
switched on with the `adversarial` argument of `HeadClassification` and `VerbalizerClassification`:

- `FreeLB`: Zhu, Cheng, Gan, Sun, Goldstein, Liu, ICLR 2020, "FreeLB: Enhanced Adversarial Training
  for Natural Language Understanding" (arXiv:1909.11764). K ascent steps on a norm-bounded
  perturbation of the word embeddings; the parameter gradient is the mean of the K gradients, one
  at each perturbation (a "free" large batch of K virtual batches).
- `SMART`: Jiang, He, Chen, Liu, Gao, Zhao, ACL 2020, "SMART: Robust and Efficient Fine-Tuning for
  Pre-trained Natural Language Models through Principled Regularized Optimization"
  (arXiv:1911.03437). The task loss plus lambda_s times the symmetric KL between the predictions on
  the clean and on the (ascended) perturbed embeddings. Its Bregman proximal point step (a
  momentum teacher) is not implemented here.

Both run inside `Task.step`, so Lightning's automatic optimisation and every module stay as they
are: the returned loss already holds the K forward passes, and its one backward gives the method's
parameter gradient. Validation and test (run without gradients) score the clean input.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .adversarial_perturbation import EmbeddingPerturbation, normalized, per_example
from .base import TaskConfigError, TaskOutput
from .robust import divergence

Score = Callable[[], torch.Tensor]  # the batch's class scores [B, classes] from one forward of the model
Loss = Callable[[torch.Tensor], TaskOutput]  # the task's loss, predictions and targets for class scores


def _positive(owner: str, name: str, value: float, typical: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise TaskConfigError(f"{owner} {name}={value!r} must be a positive number (typical: {typical}).")
    return float(value)


def _count(owner: str, name: str, value: int, typical: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TaskConfigError(f"{owner} {name}={value!r} must be a whole number >= 1 (typical: {typical}).")
    return value


class Adversary:
    """An adversarial objective on input-embedding perturbations (FreeLB, SMART); subclasses implement `objective`."""

    def objective(self, model: torch.nn.Module, score: Score, loss: Loss) -> TaskOutput:
        """The training loss for one batch: `score()` runs the model on it, `loss(scores)` is the clean objective."""
        raise NotImplementedError


class FreeLB(Adversary):
    """FreeLB (Zhu et al. 2020): K-step ascent on an L2-bounded embedding perturbation, gradients averaged.

    For each batch, with delta_0 random (or zero) on the real tokens::

        loss = (1/K) * sum_{t=0}^{K-1} L(f(X + delta_t), y)
        delta_{t+1} = Proj_{||delta|| <= max_norm}(delta_t + step_size * g_t / ||g_t||),  g_t = dL(X + delta_t)/d delta_t

    norms per example over all its tokens (Frobenius); each delta_t is a constant for the parameters, so
    the parameter gradient is the mean of the K gradients, as in the paper's Algorithm 1. The K graphs are
    kept until Lightning's backward, so activation memory grows K-fold (the reference code frees each
    after its own backward, which Lightning's automatic optimisation does not allow inside a step).

    Example::

        HeadClassification(adversarial=FreeLB(steps=3, step_size=0.1, init_magnitude=0.1, max_norm=0.5))

    Args:
        steps: K, forward/backward passes per batch (paper: 2-3 on GLUE); 1 with init_magnitude 0 is the plain loss.
        step_size: alpha, the L2 length of each ascent step on delta (paper's GLUE runs: around 0.1).
        init_magnitude: delta_0 is uniform in [-1, 1] on real tokens times init_magnitude / sqrt(tokens * hidden)
            (so its norm is about init_magnitude / sqrt(3)); 0 starts from the clean embeddings.
        max_norm: epsilon, the largest L2 norm of delta per example after each ascent step; null: unbounded
            (the reference code's 0), so the norm stays below about init_magnitude + (K-1) * step_size.
    """

    def __init__(self, steps: int = 2, step_size: float = 0.1, init_magnitude: float = 0.1,
                 max_norm: float | None = None) -> None:
        self.steps = _count("FreeLB", "steps", steps, "2-3")
        self.step_size = _positive("FreeLB", "step_size", step_size, "0.03-0.3")
        if isinstance(init_magnitude, bool) or not isinstance(init_magnitude, int | float) or init_magnitude < 0:
            raise TaskConfigError(f"FreeLB init_magnitude={init_magnitude!r} must be >= 0 (0: start from the clean embeddings).")
        self.init_magnitude = float(init_magnitude)
        self.max_norm = None if max_norm is None else _positive("FreeLB", "max_norm", max_norm, "0.1-1, or null for unbounded")

    def start(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """delta_0: uniform noise on the real tokens, scaled by init_magnitude / sqrt(real tokens * hidden size)."""
        if self.init_magnitude == 0:
            return torch.zeros_like(embeds)
        noise = torch.empty_like(embeds).uniform_(-1, 1) * mask.unsqueeze(-1)
        sizes = mask.sum(dim=1).clamp_min(1) * embeds.shape[-1]
        return noise * (self.init_magnitude / sizes.sqrt()).view(-1, 1, 1)

    def ascend(self, delta: torch.Tensor, grad: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """delta + step_size * grad / ||grad||, projected back onto the max_norm ball (per example, L2)."""
        delta = delta.detach() + self.step_size * normalized(grad, mask, 2)
        if self.max_norm is None:
            return delta
        return delta * (self.max_norm / per_example(delta, 2).clamp_min(torch.finfo(delta.dtype).tiny)).clamp(max=1.0)

    def objective(self, model: torch.nn.Module, score: Score, loss: Loss) -> TaskOutput:
        noise = EmbeddingPerturbation(model, self.start)
        outputs: list[TaskOutput] = []
        with noise:
            for step in range(self.steps):
                outputs.append(loss(noise.run(score)))
                if step + 1 < self.steps:  # the last perturbation is used by no forward: no ascent
                    (grad,) = torch.autograd.grad(outputs[-1].loss, noise.delta, retain_graph=True)
                    noise.move(self.ascend(noise.delta, grad, noise.mask))
        first = outputs[0]
        mean = torch.stack([output.loss for output in outputs]).mean()
        return TaskOutput(loss=mean, preds=first.preds, target=first.target)


class SMART(Adversary):
    """SMART's smoothness-inducing adversarial regularizer (Jiang et al. 2020).

    For each batch, with p = softmax(f(X)) and q = softmax(f(X + delta))::

        loss = L(f(X), y) + weight * (KL(p || q) + KL(q || p))
        delta_0 ~ N(0, noise_std^2) on real tokens
        delta <- clamp(delta + step_size * g / ||g||_inf, -max_norm, max_norm),  g = d KL-sym(p.detach(), q) / d delta

    repeated `steps` times (the paper's T = 1), as in the paper's Algorithm 1 (an L-infinity ball, the
    gradient normalised per example). Gradients of the final term reach both predictions, as the paper
    writes it; the Bregman proximal point (momentum teacher) part of SMART is not implemented.
    Unverified: the defaults below are our reading of the paper's settings; the reference code
    (namisan/mt-dnn) rescales delta + eta * g to unit infinity norm per token instead of clamping it,
    a much larger perturbation. At the defaults the term is tiny (entries of delta <= 1e-5); raise
    max_norm (and step_size) for a stronger regularizer.

    Example::

        VerbalizerClassification(adversarial=SMART(weight=1.0))

    Args:
        weight: lambda_s, the regularizer's weight (paper: 1, 3 or 5).
        noise_std: sigma, the standard deviation of the initial Gaussian perturbation (paper: 1e-5, unverified).
        step_size: eta, the ascent step, in units of the largest gradient entry (paper: 1e-3, unverified).
        max_norm: epsilon, the largest absolute entry of delta (paper: 1e-5, unverified).
        steps: T, ascent steps before the regularizer is computed (paper: 1).
    """

    def __init__(self, weight: float = 1.0, noise_std: float = 1e-5, step_size: float = 1e-3,
                 max_norm: float = 1e-5, steps: int = 1) -> None:
        self.weight = _positive("SMART", "weight", weight, "1-5; set adversarial: null to train without it")
        self.noise_std = _positive("SMART", "noise_std", noise_std, "1e-5")
        self.step_size = _positive("SMART", "step_size", step_size, "1e-3")
        self.max_norm = _positive("SMART", "max_norm", max_norm, "1e-5")
        self.steps = _count("SMART", "steps", steps, "1")

    def start(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.randn_like(embeds) * self.noise_std * mask.unsqueeze(-1)

    def objective(self, model: torch.nn.Module, score: Score, loss: Loss) -> TaskOutput:
        clean = score()
        output = loss(clean)
        noise = EmbeddingPerturbation(model, self.start)
        with noise:
            for _ in range(self.steps):
                (grad,) = torch.autograd.grad(divergence(clean.detach(), noise.run(score)), noise.delta)
                step = noise.delta.detach() + self.step_size * normalized(grad, noise.mask, math.inf)
                noise.move(step.clamp(-self.max_norm, self.max_norm))
            perturbed = noise.run(score)
        # divergence() is the mean of the two KL directions; SMART's l_s is their sum
        output.loss = output.loss + self.weight * 2 * divergence(clean, perturbed, "kl")
        return output
