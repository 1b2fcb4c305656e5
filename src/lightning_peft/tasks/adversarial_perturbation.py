"""A perturbation of the input embeddings, added inside the model's own forward.

The adversarial objectives (`tasks/adversarial.py`: FreeLB, Zhu et al. 2020, "FreeLB: Enhanced
Adversarial Training for Natural Language Understanding"; SMART, Jiang et al. 2020, "SMART: Robust
and Efficient Fine-Tuning for Pre-trained Natural Language Models through Principled Regularized
Optimization") perturb the word embeddings of the input, X + delta, and need the gradient with
respect to delta.

Here delta is added to the output of the model's input embedding layer by a forward hook, rather
than by calling the model with `inputs_embeds`. The task's own scoring then runs unchanged, with
its `input_ids`: a decoder's sequence classifier still finds the last real token from them (with
`inputs_embeds` alone it cannot), and a method that wraps the model and prepends a soft prompt to
the token embeddings (prompt tuning, DePT, IAPT) perturbs the tokens and leaves its prompt alone.
"""

from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import torch
from torch import nn

from .base import TaskConfigError

# delta_0 from (the unperturbed embeddings [B, L, d], the real-token mask [B, L] as floats)
Start = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@runtime_checkable
class HasInputEmbeddings(Protocol):
    """A `transformers` model (or a wrapper such as peft's or `PromptedModel`) that names its token embedding layer."""

    def get_input_embeddings(self) -> nn.Module: ...


class EmbeddingPerturbation:
    """While active (`with`), every forward of `model` reads its token embeddings plus `delta`.

    `delta` [B, L, d] (float32, a leaf that requires grad) is built from `start` at the first call of
    the embedding layer, in the layout the layer sees (e.g. after `left_align`); `mask` [B, L] marks
    the real tokens in that layout, taken from the `attention_mask` the model was called with (all
    ones when the call has none or one of another shape). Assign `delta` to move the perturbation.

    Example::

        noise = EmbeddingPerturbation(model, lambda embeds, mask: torch.zeros_like(embeds))
        with noise:
            loss = task_loss()                                  # runs model(...) once
            (grad,) = torch.autograd.grad(loss, noise.delta)    # d loss / d delta
    """

    def __init__(self, model: nn.Module, start: Start) -> None:
        if not isinstance(model, HasInputEmbeddings):
            raise TaskConfigError(
                f"Adversarial training perturbs the input embeddings, but {type(model).__name__} has no "
                "get_input_embeddings(); use a transformers model (or a method that wraps one) or set adversarial: null."
            )
        self.model, self.embedding, self.start = model, model.get_input_embeddings(), start
        self.delta: torch.Tensor | None = None
        self.mask: torch.Tensor | None = None
        self._call_mask: torch.Tensor | None = None
        self._handles: list = []

    def __enter__(self) -> EmbeddingPerturbation:
        self._handles = [
            self.model.register_forward_pre_hook(self._read_mask, with_kwargs=True),
            self.embedding.register_forward_hook(self._perturb),
        ]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _read_mask(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._call_mask = kwargs.get("attention_mask")

    def _perturb(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        if self.delta is None:
            mask = self._call_mask
            if mask is None or mask.shape != output.shape[:2]:
                mask = torch.ones(output.shape[:2], device=output.device)
            self.mask = mask.to(device=output.device, dtype=torch.float32)
            self.delta = self.start(output.detach().float(), self.mask).requires_grad_()
        return output + self.delta.to(output.dtype)

    def run(self, score: Callable[[], torch.Tensor]) -> torch.Tensor:
        """`score()` with the perturbation in place; refuse a model whose forward never embedded its input."""
        scores = score()
        if self.delta is None:
            raise TaskConfigError(
                f"{type(self.model).__name__}'s forward never ran its input embedding layer, so adversarial training "
                "has nothing to perturb; use a method that embeds the input tokens or set adversarial: null."
            )
        return scores

    def move(self, delta: torch.Tensor) -> None:
        """Use `delta` (detached: the next forward's perturbation is a constant for the parameters) from now on."""
        self.delta = delta.detach().requires_grad_()


def per_example(values: torch.Tensor, norm: float) -> torch.Tensor:
    """The `norm`-norm (2 or inf) of each example's [L, d] slice, shaped [B, 1, 1] to broadcast."""
    return torch.linalg.vector_norm(values.flatten(1), ord=norm, dim=1).view(-1, 1, 1)


def normalized(grad: torch.Tensor, mask: torch.Tensor, norm: float) -> torch.Tensor:
    """grad / ||grad|| per example (padding zeroed first); a zero gradient stays zero."""
    grad = grad * mask.unsqueeze(-1)
    return grad / per_example(grad, norm).clamp_min(torch.finfo(grad.dtype).tiny)
