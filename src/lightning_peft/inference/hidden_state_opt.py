"""Hidden-state optimisation at inference: a few gradient steps on the cached keys/values before predicting.

Paper: Davis Yoshida, "Making the Most of your Model: Methods for Finetuning and Applying
Pretrained Transformers" (PhD thesis, TTIC, 2023), after Yoshida & Gimpel, "Reconsidering the
Past: Optimizing Hidden States in Language Models" (Findings of EMNLP 2021). The model's weights
stay fixed; the cached past (keys and values of the text already read) is nudged by gradient
steps so that the model assigns the already-seen text a higher likelihood, and generation then
continues from the nudged cache.

Our choices: the prompt is split at `split` (default: its middle); the cache of the first part is
optimised with Adam to lower the loss of the second part read through it; the second part is then
read again by `generate` on top of the optimised cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache

from .errors import GenerationError


@dataclass(frozen=True)
class HiddenStateOptimisation:
    """How to optimise the cache.

    Args:
        steps: Gradient steps (the budget; 0: off).
        lr: Adam's learning rate on the cached keys and values.
    """

    steps: int = 0
    lr: float = 0.01

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 0:
            raise GenerationError(f"The hidden-state optimisation step budget must be an integer >= 0, got {self.steps!r}.")
        if not self.lr > 0:
            raise GenerationError(f"The hidden-state optimisation learning rate must be > 0, got {self.lr!r}.")


def _cache(tensors: list[tuple[torch.Tensor, torch.Tensor]]) -> DynamicCache:
    return DynamicCache(ddp_cache_data=tensors)


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding, as `generate` numbers them."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def seen_text_loss(model: nn.Module, tensors: list[tuple[torch.Tensor, torch.Tensor]], rest: torch.Tensor,
                   mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss of `rest` (the prompt's second part) read on top of the cache `tensors`.

    `mask` is the attention mask of the whole prompt (first part and `rest`).
    """
    logits = model(input_ids=rest, attention_mask=mask, position_ids=positions(mask)[:, -rest.shape[1]:],
                   cache=_cache(tensors), use_cache=True).logits
    targets = rest[:, 1:].masked_fill(mask[:, -rest.shape[1] + 1:] == 0, -100)
    return nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=-100)


def optimised_cache(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    settings: HiddenStateOptimisation, split: int | None = None) -> tuple[DynamicCache, list[float]]:
    """The cache of `input_ids[:, :split]` after `settings.steps` Adam steps, and the loss before each step and after.

    Returns a `DynamicCache` for `model.generate(input_ids, cache=cache)`: generate reads
    the tokens after `split` on top of it. Call outside `torch.inference_mode`.
    """
    split = input_ids.shape[1] // 2 if split is None else split
    if not 0 < split < input_ids.shape[1] - 1:
        raise GenerationError(f"Hidden-state optimisation needs a prompt of at least 3 tokens, got {input_ids.shape[1]}.")
    rest = input_ids[:, split:]
    with torch.no_grad():
        first = model(input_ids=input_ids[:, :split], attention_mask=attention_mask[:, :split],
                      position_ids=positions(attention_mask)[:, :split], use_cache=True)
    tensors = [(layer.keys.detach().clone().requires_grad_(True), layer.values.detach().clone().requires_grad_(True))
               for layer in first.cache.layers]
    leaves = [t for pair in tensors for t in pair]
    optimizer = torch.optim.Adam(leaves, lr=settings.lr)
    losses = []
    with torch.enable_grad():
        for _ in range(settings.steps):
            loss = seen_text_loss(model, tensors, rest, attention_mask)
            losses.append(float(loss.detach()))
            optimizer.zero_grad()
            grads = torch.autograd.grad(loss, leaves)  # the weights get no gradient
            for leaf, grad in zip(leaves, grads):
                leaf.grad = grad
            optimizer.step()
    with torch.no_grad():
        losses.append(float(seen_text_loss(model, tensors, rest, attention_mask)))
    return _cache([(k.detach(), v.detach()) for k, v in tensors]), losses
