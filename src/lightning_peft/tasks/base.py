"""The objective, independent of the method: batch -> loss, predictions and metrics.

A task decides which `transformers` auto class to load, checks itself against the tokenizer
and the data's labels (`bind`), computes the loss for a batch, and owns its torchmetrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn
from torchmetrics import MetricCollection
from transformers import PreTrainedTokenizerBase


class TaskConfigError(ValueError):
    """A task cannot work with the given data or tokenizer (one sentence: what and how to fix)."""


@dataclass
class TaskOutput:
    """What one step produced: the loss, and what the task's metrics consume."""

    loss: torch.Tensor
    preds: torch.Tensor | None = None
    target: torch.Tensor | None = None
    token_nll: torch.Tensor | None = None  # summed negative log-likelihood over counted tokens
    tokens: torch.Tensor | None = None  # number of counted tokens


@runtime_checkable
class Classifies(Protocol):
    """A task whose prediction is a class: `scores` are [batch, classes] in `label_names` order.

    `lightning-peft predict` turns them into a label and class probabilities; the model reads
    right-padded `input_ids` and `attention_mask` built with the data's `InputFormat`.
    """

    label_names: list[str]

    def scores(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor: ...


class Task:
    """Base class; subclasses set `auto_class_name` and implement `step` and `metrics`."""

    auto_class_name = "AutoModelForCausalLM"
    needs_labels = False
    needs_templates = False  # training batches must carry paraphrased instructions (data with `templates`)

    def bind(self, tokenizer: PreTrainedTokenizerBase, label_names: list[str] | None) -> None:
        """Check the task against the tokenizer and label names; precompute what `step` needs."""
        if self.needs_labels and not label_names:
            raise TaskConfigError(
                f"{type(self).__name__} needs the data's label names; use a classification data module "
                "(e.g. lightning_peft.data.ClassificationData) or pass label_names."
            )
        self.tokenizer = tokenizer
        self.label_names = list(label_names or [])

    def auto_class(self):
        import transformers

        return getattr(transformers, self.auto_class_name)

    def model_kwargs(self) -> dict:
        """Extra keyword arguments for `from_pretrained` (e.g. `num_labels`)."""
        return {}

    def head_modules(self, model: nn.Module) -> list[str]:
        """Modules this task adds to the backbone that must be trained in full."""
        return []

    def verbalizer_words(self) -> dict[str, str] | None:
        """Label -> the word scored for it, for tasks that classify by verbalizer (after `bind`); else None."""
        return None

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> TaskOutput:
        raise NotImplementedError

    def metrics(self) -> MetricCollection:
        raise NotImplementedError

    def update(self, metrics: MetricCollection, output: TaskOutput) -> None:
        metrics.update(output.preds, output.target)
