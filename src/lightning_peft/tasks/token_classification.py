"""Token classification: a tag for every word (named entities, part of speech), from a linear head per token.

The encoder fine-tuning of Yıldırım 2024 ("Fine-tuning Transformer-based Encoder for Turkish Language
Understanding Tasks", arXiv:2401.17396) for named-entity recognition: a linear layer over each
token's last hidden state, cross-entropy over the tagged tokens, as in BERT (Devlin et al. 2019,
"BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding", section 5.3),
where a word's tag is predicted at its first word piece. `TokenClassificationData` makes the batches.

Metrics are over words: token accuracy and macro F1 over tags, and, when the tags are BIO,
entity-level micro F1 (`entity_f1.EntityF1`, exact type and boundaries).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from transformers import PreTrainedTokenizerBase

from ..constants import IGNORE_INDEX
from .base import Task, TaskConfigError, TaskOutput
from .entity_f1 import EntityF1, is_bio


class TokenClassification(Task):
    """A new linear head over every token (`AutoModelForTokenClassification`), trained in full.

    Batches hold `labels` (a tag index per word piece, -100 where the loss skips it) and `word_starts`
    (each word's first piece, where its prediction is read), as `TokenClassificationData` makes them.

    Example::

        task = TokenClassification()
        task.bind(tokenizer, ["O", "B-PER", "I-PER"])
        output = task.step(model, batch)   # loss, and per-piece predictions scored at word starts

    Args:
        entity_f1: Report entity-level micro F1 (`entity_f1` in the logs) over BIO tags; null: when every tag
            is O, B-<type> or I-<type>. true with other tags is refused.
    """

    auto_class_name = "AutoModelForTokenClassification"
    needs_labels = True

    def __init__(self, entity_f1: bool | None = None) -> None:
        self.entity_f1 = entity_f1

    def bind(self, tokenizer: PreTrainedTokenizerBase, label_names: list[str] | None) -> None:
        super().bind(tokenizer, label_names)
        bio = is_bio(self.label_names)
        if self.entity_f1 and not bio:
            raise TaskConfigError(
                f"entity_f1 needs BIO tags (O, B-<type>, I-<type>), but the data's tags are {self.label_names[:6]}; "
                "set task entity_f1: false (or null) for tags without entity spans, such as part of speech.")
        self.scores_entities = bio if self.entity_f1 is None else self.entity_f1

    def model_kwargs(self) -> dict:
        return {"num_labels": len(self.label_names), "id2label": dict(enumerate(self.label_names)),
                "label2id": {name: index for index, name in enumerate(self.label_names)}}

    def head_modules(self, model: nn.Module) -> list[str]:
        if "classifier" not in {name for name, _ in model.named_children()}:
            raise TaskConfigError(f"No token classification head found on {type(model).__name__}; expected 'classifier'.")
        return ["classifier"]

    def scores(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Tag scores [batch, pieces, tags]: the head's logits at every piece."""
        return model(input_ids=input_ids, attention_mask=attention_mask).logits

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> TaskOutput:
        if "word_starts" not in batch:
            raise TaskConfigError("TokenClassification needs batches with a tag per word piece and the word starts; "
                                  "use lightning_peft.data.TokenClassificationData.")
        logits = self.scores(model, batch["input_ids"], batch["attention_mask"])
        labels = batch["labels"]
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)
        # Metrics read each word at its first piece only, also when training labels every piece.
        target = labels.masked_fill(~batch["word_starts"], IGNORE_INDEX)
        return TaskOutput(loss=loss, preds=logits.argmax(-1), target=target)

    def word_tags(self, preds: torch.Tensor, word_starts: torch.Tensor) -> list[list[str]]:
        """The predicted tag of every word of each sentence: `preds` [batch, pieces] read at `word_starts`."""
        return [[self.label_names[index] for index in row[starts].tolist()] for row, starts in zip(preds, word_starts)]

    def metrics(self) -> MetricCollection:
        classes = len(self.label_names)
        metrics = {"acc": MulticlassAccuracy(num_classes=classes, average="micro", ignore_index=IGNORE_INDEX),
                   "f1": MulticlassF1Score(num_classes=classes, average="macro", ignore_index=IGNORE_INDEX)}
        if self.scores_entities:
            metrics["entity_f1"] = EntityF1(self.label_names)
        return MetricCollection(metrics)
