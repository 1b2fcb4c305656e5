"""Causal-LM instruction SFT (loss on response tokens only) and seq2seq text-to-text.

The data marks prompt and padding positions with -100 in `labels`; `transformers` models shift
and mask them in their own loss. Perplexity is exp of the mean negative log-likelihood over the
counted tokens, aggregated as sums so it is exact across batches and processes.
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import MetricCollection

from .base import Task, TaskOutput
from .metrics import TokenPerplexity

IGNORE_INDEX = -100


class _LanguageModeling(Task):
    shift = 0

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> TaskOutput:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        tokens = (batch["labels"][:, self.shift :] != IGNORE_INDEX).sum()
        return TaskOutput(loss=out.loss, token_nll=out.loss.detach().double() * tokens, tokens=tokens)

    def metrics(self) -> MetricCollection:
        return MetricCollection({"perplexity": TokenPerplexity()})

    def update(self, metrics: MetricCollection, output: TaskOutput) -> None:
        metrics.update(output.token_nll, output.tokens)


class CausalLMSFT(_LanguageModeling):
    """Next-token loss on the response tokens of (prompt, response) pairs, for decoder-only models."""

    auto_class_name = "AutoModelForCausalLM"
    shift = 1  # the first label is never predicted


class Seq2Seq(_LanguageModeling):
    """Text-to-text with an encoder-decoder (e.g. T5 with label words as targets)."""

    auto_class_name = "AutoModelForSeq2SeqLM"
