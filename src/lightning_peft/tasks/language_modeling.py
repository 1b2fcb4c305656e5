"""Causal-LM instruction SFT (loss on response tokens only) and seq2seq text-to-text.

The data marks prompt and padding positions with -100 in `labels`; `transformers` models shift
and mask them in their own loss. Perplexity is exp of the mean negative log-likelihood over the
counted tokens, aggregated as sums so it is exact across batches and processes.

Batches may be padded (`attention_mask`) or packed without padding (`position_ids` restarting at 0
per example and no `attention_mask`; see `data/packing.py`): both are passed to the model as given.
`CausalLMSFT` computes the loss from the final hidden states chunk by chunk, at labelled positions only
(`tasks/losses.py`), instead of letting the model project every position onto the vocabulary: by default
wherever that reproduces the model's own loss (`chunked_loss="auto"`).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torchmetrics import MetricCollection

from ..constants import IGNORE_INDEX
from .base import Task, TaskConfigError, TaskOutput
from .losses import DEFAULT_CHUNK_SIZE, chunked_lm_loss
from .metrics import TokenPerplexity



class _LanguageModeling(Task):
    shift = 0

    @staticmethod
    def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What the model reads from a padded or packed batch. No KV cache: training never reuses one, and
        `transformers` builds the block-diagonal mask of a packed row only when no cache is passed."""
        inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "position_ids") if key in batch}
        return {**inputs, "use_cache": False}

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> TaskOutput:
        out = model(**self.model_inputs(batch), labels=batch["labels"])
        tokens = (batch["labels"][:, self.shift :] != IGNORE_INDEX).sum()
        return TaskOutput(loss=out.loss, token_nll=out.loss.detach().double() * tokens, tokens=tokens)

    def metrics(self) -> MetricCollection:
        return MetricCollection({"perplexity": TokenPerplexity()})

    def update(self, metrics: MetricCollection, output: TaskOutput) -> None:
        metrics.update(output.token_nll, output.tokens)


def chunked_loss_unsupported(model: nn.Module) -> str | None:
    """Why the chunked loss would not reproduce `model`'s own loss (a sentence), or None where it does."""
    if model.get_output_embeddings() is None:
        return f"{type(model).__name__} has no output embeddings (LM head)"
    for name in ("final_logit_softcapping", "logit_scale"):  # Hugging Face config fields, absent on most models
        if getattr(model.config, name, None) not in (None, 1.0):
            return f"This model transforms its logits after the LM head ({name}), which the chunked loss does not reproduce"
    return None


def final_hidden_states(model: nn.Module, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, nn.Module]:
    """Run `model` up to its LM head and return (the head's input hidden states, the head module).

    A pre-hook on the output-embedding module records its input and hands it an empty slice, so the
    model still runs its own forward (peft wrappers, virtual tokens, compiled graphs included) but
    projects zero positions onto the vocabulary.
    """
    reason = chunked_loss_unsupported(model)
    if reason:
        raise TaskConfigError(f"{reason}; set chunked_loss: false (or auto).")
    head = model.get_output_embeddings()
    captured: list[torch.Tensor] = []

    def take_hidden(module, args):
        if not args:
            raise TaskConfigError("The LM head was called without positional hidden states; set chunked_loss: false.")
        captured.append(args[0])
        return (args[0][..., :0, :], *args[1:])

    handle = head.register_forward_pre_hook(take_hidden)
    try:
        model(**inputs)
    finally:
        handle.remove()
    return captured[-1], head


class CausalLMSFT(_LanguageModeling):
    """Next-token loss on the response tokens of (prompt, response) pairs, for decoder-only models.

    Args:
        chunked_loss: Compute the loss from the final hidden states and the LM head chunk by chunk, only at
            labelled positions, so the full [tokens, vocab] logits never exist (same loss and gradients;
            less memory, and less compute: prompt and padding positions are never projected onto the
            vocabulary). "auto" (default): wherever that reproduces the model's own loss (an LM head, no
            logit transform after it such as Gemma-2's soft-capping), else the model's own loss. true: always,
            and a model it cannot reproduce is refused. false: the model's own loss.
        loss_chunk_size: Tokens per chunk with chunked_loss (memory of one chunk: size x vocab x 4 bytes).
    """

    auto_class_name = "AutoModelForCausalLM"
    shift = 1  # the first label is never predicted

    def __init__(self, chunked_loss: bool | Literal["auto"] = "auto", loss_chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        if chunked_loss not in (True, False, "auto"):
            raise TaskConfigError(f"chunked_loss must be true, false or auto, got {chunked_loss!r}.")
        if not isinstance(loss_chunk_size, int) or loss_chunk_size < 1:
            raise TaskConfigError(f"loss_chunk_size must be a positive integer (e.g. 1024), got {loss_chunk_size!r}.")
        self.chunked_loss, self.loss_chunk_size = chunked_loss, loss_chunk_size

    def uses_chunked_loss(self, model: nn.Module) -> bool:
        """Whether `step` computes the chunked loss for `model` (see `chunked_loss`)."""
        if self.chunked_loss == "auto":
            return chunked_loss_unsupported(model) is None
        return self.chunked_loss

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> TaskOutput:
        if not self.uses_chunked_loss(model):
            return super().step(model, batch)
        labels = batch["labels"]
        hidden, head = final_hidden_states(model, self.model_inputs(batch))
        # Methods that prepend virtual tokens (prompt tuning) lengthen the sequence on the left.
        total, tokens = chunked_lm_loss(hidden[:, hidden.shape[1] - labels.shape[1]:], head, labels,
                                        self.loss_chunk_size, shift=self.shift)
        return TaskOutput(loss=total / tokens.clamp(min=1), token_nll=total.detach().double(), tokens=tokens)


class Seq2Seq(_LanguageModeling):
    """Text-to-text with an encoder-decoder (e.g. T5 with label words as targets)."""

    auto_class_name = "AutoModelForSeq2SeqLM"
