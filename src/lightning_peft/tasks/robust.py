"""Robust soft prompts: the task loss plus agreement between an instruction and its paraphrase.

Sun, Shaib, Wallace, ICLR 2024, "Evaluating the Zero-shot Robustness of Instruction-tuned Language
Models", arXiv:2306.11270. Instruction-tuned models answer worse, and less consistently, under
unseen but equivalent phrasings of an instruction; training a soft prompt so that the model's
outputs for an instruction and its paraphrases agree makes them more robust.

Here the outputs compared are the class distributions a classification task computes (softmax over
its class scores), so the objective works with any method that trains a prompt (prompt tuning,
DePT, IAPT, ...) and any scoring task (verbalizer or head). The data comes from
`lightning_peft.data.paraphrase.ParaphraseClassificationData`; accuracy mean/std across phrasings,
seen vs unseen, is measured by `lightning_peft.evaluation.robustness.instruction_robustness`.
"""

from __future__ import annotations

import math
from typing import Literal, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from transformers import PreTrainedTokenizerBase

from .base import Task, TaskConfigError, TaskOutput

Divergence = Literal["kl", "js"]
PARAPHRASE_KEYS = ("paraphrase_input_ids", "paraphrase_attention_mask")


@runtime_checkable
class ClassScoring(Protocol):
    """A classification task that exposes its class scores and its loss on them (tasks/classification.py)."""

    def scores(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor: ...

    def _output(self, scores: torch.Tensor, labels: torch.Tensor) -> TaskOutput: ...


def divergence(scores: torch.Tensor, other: torch.Tensor, kind: Divergence = "kl") -> torch.Tensor:
    """Batch mean divergence between softmax(scores) = p and softmax(other) = q ([B, classes] each).

    kl: symmetric, (KL(p||q) + KL(q||p)) / 2.  js: Jensen-Shannon, (KL(p||m) + KL(q||m)) / 2 with
    m = (p + q) / 2 (bounded by log 2). Both are 0 exactly when p = q, and gradients reach both.
    """
    log_p, log_q = F.log_softmax(scores.float(), dim=-1), F.log_softmax(other.float(), dim=-1)
    p, q = log_p.exp(), log_q.exp()
    if kind == "kl":
        per_example = 0.5 * ((p * (log_p - log_q)).sum(-1) + (q * (log_q - log_p)).sum(-1))
    else:
        log_m = torch.logsumexp(torch.stack([log_p, log_q]), dim=0) - math.log(2.0)
        per_example = 0.5 * ((p * (log_p - log_m)).sum(-1) + (q * (log_q - log_m)).sum(-1))
    return per_example.mean()


class RobustPrompt(Task):
    """A classification task trained to answer the same under paraphrased instructions.

    Training batches with `paraphrase_input_ids` / `paraphrase_attention_mask` give
    loss = task loss on the original + weight * divergence(class distribution on the original,
    class distribution on the paraphrase); metrics use the original. Any other batch
    (validation, test) is handled by the inner task exactly as without this wrapper.

    Example::

        task = RobustPrompt(VerbalizerClassification(label_words={...}), weight=1.0, divergence="js")

    Args:
        task: The classification task whose class scores are compared (e.g. VerbalizerClassification).
        weight: lambda, the weight of the divergence term (0 trains the task loss alone).
        divergence: "kl" (symmetric KL) or "js" (Jensen-Shannon) between the two class distributions.
    """

    needs_templates = True

    def __init__(self, task: Task, weight: float = 1.0, divergence: Divergence = "kl") -> None:
        if not isinstance(task, ClassScoring):
            raise TaskConfigError(
                f"RobustPrompt compares class scores, which {type(task).__name__} does not expose; wrap a "
                "classification task (VerbalizerClassification or HeadClassification)."
            )
        if not weight >= 0:
            raise TaskConfigError(f"RobustPrompt weight={weight} must be >= 0 (typical: 0.1-10).")
        if divergence not in ("kl", "js"):
            raise TaskConfigError(f"RobustPrompt divergence={divergence!r} must be 'kl' or 'js'.")
        self.task, self.weight, self.divergence = task, float(weight), divergence

    # Everything but the training objective is the inner task's.
    @property
    def auto_class_name(self) -> str:
        return self.task.auto_class_name

    @property
    def needs_labels(self) -> bool:
        return self.task.needs_labels

    def verbalizer_words(self) -> dict[str, str] | None:
        return self.task.verbalizer_words()

    def bind(self, tokenizer: PreTrainedTokenizerBase, label_names: list[str] | None) -> None:
        self.task.bind(tokenizer, label_names)
        self.tokenizer, self.label_names = self.task.tokenizer, self.task.label_names

    def auto_class(self):
        return self.task.auto_class()

    def scores(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The inner task's class scores: at inference the wrapper changes nothing."""
        return self.task.scores(model, input_ids, attention_mask)

    def model_kwargs(self) -> dict:
        return self.task.model_kwargs()

    def head_modules(self, model: nn.Module) -> list[str]:
        return self.task.head_modules(model)

    def metrics(self) -> MetricCollection:
        return self.task.metrics()

    def update(self, metrics: MetricCollection, output: TaskOutput) -> None:
        self.task.update(metrics, output)

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> TaskOutput:
        present = [key in batch for key in PARAPHRASE_KEYS]
        if not any(present):
            return self.task.step(model, batch)
        if not all(present):
            raise TaskConfigError(f"RobustPrompt needs both {PARAPHRASE_KEYS} in a batch; use ParaphraseClassificationData.")
        scores = self.task.scores(model, batch["input_ids"], batch["attention_mask"])
        paraphrased = self.task.scores(model, batch["paraphrase_input_ids"], batch["paraphrase_attention_mask"])
        output = self.task._output(scores, batch["labels"])  # the inner task's own loss, preds and target
        output.loss = output.loss + self.weight * divergence(scores, paraphrased, self.divergence)
        return output
