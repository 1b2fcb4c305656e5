"""A sequence classifier trained on a teacher's soft labels: PET's final model.

Schick & Schuetze 2021, "Exploiting Cloze Questions for Few Shot Text Classification and Natural
Language Inference" (EACL; arXiv:2001.07676), section 3.2: the ensemble of pattern models labels the
unlabelled pool with class scores, and a plain sequence classifier (a head on the same backbone, no
pattern) learns them with the distillation loss of Hinton et al. (2015) at temperature 2.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import TaskConfigError, TaskOutput
from .classification import HeadClassification
from .losses import distillation_kl


class DistillationClassification(HeadClassification):
    """`HeadClassification` whose training batches carry `soft_labels` (a teacher's class scores) instead of labels.

    Args:
        temperature: Softmax temperature of teacher and student in the KL loss (PET: 2).

    Batches with `soft_labels` [B, classes] train on `distillation_kl`; batches with `labels` (validation,
    test) are scored as `HeadClassification` scores them, so metrics and `lightning-peft predict` are its own.
    """

    def __init__(self, temperature: float = 2.0) -> None:
        if isinstance(temperature, bool) or not isinstance(temperature, int | float) or temperature <= 0:
            raise TaskConfigError(f"temperature must be a positive number (PET uses 2), got {temperature!r}.")
        self.temperature = float(temperature)

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> TaskOutput:
        if "soft_labels" not in batch:
            return super().step(model, batch)
        scores = self.scores(model, batch["input_ids"], batch["attention_mask"])
        return TaskOutput(loss=distillation_kl(scores, batch["soft_labels"].to(scores.device), self.temperature))
