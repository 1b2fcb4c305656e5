"""Prepend k soft-prompt vectors to a model's input embeddings: the input plumbing DePT, EPT and IAPT share.

Prompt tuning (Lester, Al-Rfou, Constant 2021, "The Power of Scale for Parameter-Efficient Prompt
Tuning", arXiv:2104.08691) feeds ``[P; E]`` to a frozen model, where ``P`` [B, k, d] are trained
vectors and ``E`` [B, L, d] the embedded input. Everything the model reads alongside the
embeddings must then move by k positions; `prepend_to_inputs` does that in one place:

- ``inputs_embeds`` = cat(P, E) along the sequence (P cast to E's dtype);
- ``attention_mask`` = k ones, then the given mask (all ones when none was given);
- ``position_ids`` (models that are not encoder-decoder and whose forward takes them): the prompt
  holds positions 0..k-1 and the input's follow. Position ids the caller passed are shifted by k
  (so the restarts of a packed row survive); without them, and with a padded mask, they are the
  cumulative sum of the extended mask minus one, clamped at zero, so real tokens continue
  contiguously at k, k+1, ... whether the row was right- or left-padded. Without either, the
  model's default (0..k+L-1) is already right and nothing is passed;
- ``labels`` aligned with the tokens ([B, L], e.g. causal-LM or MLM labels) get k times -100
  in front so the prompt positions carry no loss; labels of another shape (class ids) pass as is;
- encoder-decoder models (``config.is_encoder_decoder``, e.g. T5): the prompt goes to the encoder
  only; labels, decoder inputs and positions are left untouched;
- sequence classifiers (``*ForSequenceClassification``): rows are left-aligned first, because a
  decoder-only classifier given ``inputs_embeds`` cannot find padding and pools the last column.

`PromptedModel` wraps a frozen model around that helper: it embeds ``input_ids``, asks the
subclass's `PromptedModel.prompt` hook for the prompt (and optionally changed embeddings), and
calls the base with ``inputs_embeds``. Keyword arguments the tasks pass (``logits_to_keep``,
``decoder_input_ids``, ...) reach the base unchanged. Decoder-only outputs keep the k prompt
positions at the front of ``logits`` (as peft's prompt tuning does); ``logits[:, -1]`` is still
the last real token's.
"""

from __future__ import annotations

import inspect
import math

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ..constants import IGNORE_INDEX
from .base import MethodConfigError


def _accepts(module: nn.Module, name: str) -> bool:
    parameters = inspect.signature(module.forward).parameters
    return name in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def is_encoder_decoder(model: nn.Module) -> bool:
    return bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Consecutive positions for the attended tokens of each row (padding repeats its neighbour's)."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


def shift_positions(position_ids: torch.Tensor, k: int) -> torch.Tensor:
    """Positions 0..k-1 for a k-vector prompt, then the caller's positions moved up by k."""
    prompt = torch.arange(k, device=position_ids.device, dtype=position_ids.dtype).expand(position_ids.shape[0], k)
    return torch.cat([prompt, position_ids + k], dim=1)


def pools_last_token(model: nn.Module) -> bool:
    """Whether `model` is a sequence classifier that would pool the last column of ``inputs_embeds``."""
    return type(model).__name__.endswith("ForSequenceClassification") and not is_encoder_decoder(model)


def left_align_rows(attention_mask: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Reorder each row of `tensors` ([B, L, ...]) so its padding (mask 0) comes first, keeping token order.

    A stable sort of the mask puts the zeros before the ones in their original order.
    """
    order = attention_mask.long().argsort(dim=1, stable=True)
    return tuple(
        t.gather(1, order.view(*order.shape, *([1] * (t.dim() - 2))).expand(*order.shape, *t.shape[2:])) for t in tensors
    )


def prepend_to_inputs(
    model: nn.Module,
    prompt_embeds: torch.Tensor,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Keyword arguments for ``model(**kwargs)`` with ``prompt_embeds`` [B, k, d] before ``inputs_embeds`` [B, L, d].

    See the module docstring for what happens to the mask, positions and labels. Keys whose
    value would be None are left out.
    """
    if prompt_embeds.dim() != 3 or inputs_embeds.dim() != 3 or prompt_embeds.shape[0] != inputs_embeds.shape[0]:
        raise ValueError(
            f"prompt_embeds {tuple(prompt_embeds.shape)} and inputs_embeds {tuple(inputs_embeds.shape)} must both be "
            "[batch, length, hidden] with the same batch size."
        )
    batch, k = prompt_embeds.shape[:2]
    length = inputs_embeds.shape[1]
    device = inputs_embeds.device
    ones = torch.ones(batch, k, dtype=torch.long, device=device)
    if attention_mask is not None and pools_last_token(model):
        inputs_embeds, attention_mask = left_align_rows(attention_mask, inputs_embeds, attention_mask)
        position_ids = None  # rows moved; recounted from the mask below
    given_mask = attention_mask
    if attention_mask is None:
        attention_mask = torch.ones(batch, length, dtype=torch.long, device=device)
    kwargs: dict[str, torch.Tensor] = {
        "inputs_embeds": torch.cat([prompt_embeds.to(inputs_embeds.dtype), inputs_embeds], dim=1),
        "attention_mask": torch.cat([ones.to(attention_mask.dtype), attention_mask], dim=1),
    }
    if is_encoder_decoder(model):
        if labels is not None:
            kwargs["labels"] = labels
        return kwargs
    if _accepts(model, "position_ids"):
        if position_ids is not None:
            kwargs["position_ids"] = shift_positions(position_ids, k)
        elif given_mask is not None and not bool(given_mask.bool().all()):
            kwargs["position_ids"] = positions_from_mask(kwargs["attention_mask"])
    if labels is not None:
        if labels.dim() == 2 and labels.shape[1] == length:
            labels = torch.cat([torch.full((batch, k), IGNORE_INDEX, dtype=labels.dtype, device=labels.device), labels], 1)
        kwargs["labels"] = labels
    return kwargs


def input_embeddings(model: nn.Module, method: str) -> nn.Module:
    """The model's token-embedding module, or one clear error when it has none."""
    try:
        embeddings = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        embeddings = None
    weight = getattr(embeddings, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise MethodConfigError(
            f"{method} adds to the input token embeddings, but {type(model).__name__} exposes none through "
            "get_input_embeddings(); use a transformers model with token inputs, or LoRA / prefix tuning instead."
        )
    return embeddings


def text_token_ids(
    model: nn.Module, length: int, init_text: str, tokenizer: str | PreTrainedTokenizerBase | None, method: str
) -> list[int]:
    """`length` token ids of `init_text`, tiled / truncated, tokenized without special tokens (the reference
    keeps them, e.g. T5's ``</s>``); `tokenizer` may be a name (zoo short names work) or None for the
    model's own folder."""
    if tokenizer is None or isinstance(tokenizer, str):
        from .. import zoo

        tokenizer = zoo.load_tokenizer(tokenizer or model.name_or_path)
    ids = tokenizer(init_text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise MethodConfigError(f"{method} init_text {init_text!r} tokenizes to nothing; give a non-empty text or none.")
    return (ids * math.ceil(length / len(ids)))[:length]


def initial_prompt(
    model: nn.Module, length: int, init_text: str | None, tokenizer: str | PreTrainedTokenizerBase | None, method: str
) -> torch.Tensor:
    """[length, d] start values of soft-prompt vectors (DePT's short prompt, IAPT's prompt positions): the
    embeddings of `init_text` (`text_token_ids`), else of random vocabulary tokens (global RNG)."""
    embeddings = input_embeddings(model, method)
    vocab = embeddings.weight.shape[0]
    if init_text:
        ids = torch.tensor(text_token_ids(model, length, init_text, tokenizer, method))
    else:
        ids = torch.randint(0, vocab, (length,))
    with torch.no_grad():
        return embeddings(ids.to(embeddings.weight.device)).detach().float().clone()


class PromptedModel(nn.Module):
    """A frozen model that reads a soft prompt before its input; subclasses say what the prompt is.

    Subclasses implement `prompt`. The wrapper holds the base as ``self.base`` and exposes its
    ``config`` and ``get_input_embeddings``, so tasks call it like the base model.

    For export (`lightning_peft.methods.soft_prompt_io`), the method that built the wrapper sets
    ``method_config`` to ``{"class_path": ..., "init_args": {...}}`` (JSON-able; rebuilding the
    method from it and applying it to the same base gives a wrapper with the same parameters),
    and ``head_names`` to the base parameters it trains in full (``modules_to_save``).
    """

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.method_config: dict | None = None
        self.head_names: list[str] = []

    def soft_prompt_state(self) -> dict[str, torch.Tensor]:
        """What the method trains: every parameter outside ``base``, plus the base's ``head_names``."""
        heads = {f"base.{name}" for name in self.head_names}
        return {
            name: p.detach()
            for name, p in self.named_parameters(remove_duplicate=False)
            if not name.startswith("base.") or name in heads
        }

    @property
    def config(self):
        return self.base.config

    def get_input_embeddings(self) -> nn.Module:
        return self.base.get_input_embeddings()

    def prompt(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(prompt_embeds [B, k, d], inputs_embeds [B, L, d])``; the second may be changed (DePT's offset)."""
        raise NotImplementedError

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs,
    ):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids and inputs_embeds.")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        prompt_embeds, inputs_embeds = self.prompt(inputs_embeds, attention_mask)
        inputs = prepend_to_inputs(self.base, prompt_embeds, inputs_embeds, attention_mask, position_ids, labels)
        return self.base(**inputs, **kwargs)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """Decode after the prompt, returning what the base's `generate` would for ``input_ids``.

        The base generates from ``[P; E]`` (the prompt and the input as the forward builds them);
        new tokens are embedded as the base does, without the method's changes (DePT's offset
        covers input positions only). Decoder-only models return ``input_ids`` followed by the new
        tokens, as a plain model does; encoder-decoder models return the decoder's tokens.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        prompt_embeds, inputs_embeds = self.prompt(self.get_input_embeddings()(input_ids), attention_mask)
        inputs = prepend_to_inputs(self.base, prompt_embeds, inputs_embeds, attention_mask)
        inputs.pop("position_ids", None)  # generate derives positions from the (extended) mask
        generated = self.base.generate(**inputs, **kwargs)
        if is_encoder_decoder(self.base):
            return generated
        return torch.cat([input_ids, generated], dim=1)
