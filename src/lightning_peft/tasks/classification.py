"""Text classification with a trained head, or by verbalizer at the LM head.

Verbalizer scoring follows PET (Schick & Schuetze 2021, "Exploiting Cloze Questions for Few Shot
Text Classification and Natural Language Inference", arXiv:2001.07676): each label maps to a word
and the class score is the LM's logit for that word in the answer slot. For a causal LM the slot
is the next token after the prompt, so it works zero-shot and is what prompt tuning trains.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from transformers import PreTrainedTokenizerBase

from .adversarial import Adversary
from .base import Task, TaskConfigError, TaskOutput


class _Classification(Task):
    needs_labels = True
    adversarial: Adversary | None = None  # set by the tasks that take one; None: the plain objective

    def metrics(self) -> MetricCollection:
        classes = len(self.label_names)
        return MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes=classes, average="micro"),
                "f1": MulticlassF1Score(num_classes=classes, average="macro"),
            }
        )

    def _output(self, scores: torch.Tensor, labels: torch.Tensor) -> TaskOutput:
        return TaskOutput(loss=F.cross_entropy(scores.float(), labels), preds=scores.argmax(-1), target=labels)

    def _classify(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> TaskOutput:
        """Cross-entropy on the class scores; in training (gradients on) the `adversarial` objective when one is set."""
        def score() -> torch.Tensor:
            return self.scores(model, batch["input_ids"], batch["attention_mask"])

        def loss(scores: torch.Tensor) -> TaskOutput:
            return self._output(scores, batch["labels"])

        if self.adversarial is None or not torch.is_grad_enabled():
            return loss(score())
        return self.adversarial.objective(model, score, loss)


class HeadClassification(_Classification):
    """A new linear head on the backbone (`AutoModelForSequenceClassification`), trained in full.

    For decoder-only models the head reads the last non-padding token, which needs the model's
    `pad_token_id`; it is set from the tokenizer.

    Args:
        adversarial: Adversarial fine-tuning on the input embeddings during training
            (lightning_peft.tasks.FreeLB or SMART); null: the plain cross-entropy.
    """

    auto_class_name = "AutoModelForSequenceClassification"

    def __init__(self, adversarial: Adversary | None = None) -> None:
        self.adversarial = adversarial

    def model_kwargs(self) -> dict:
        return {"num_labels": len(self.label_names), "pad_token_id": self.tokenizer.pad_token_id}

    def head_modules(self, model: nn.Module) -> list[str]:
        head = {"score", "classifier", "classification_head"} & {name for name, _ in model.named_children()}
        if not head:
            raise TaskConfigError(f"No classification head found on {type(model).__name__}; expected 'score' or 'classifier'.")
        return sorted(head)

    def scores(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Class scores [B, classes]: the head's logits."""
        return model(input_ids=input_ids, attention_mask=attention_mask).logits

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> TaskOutput:
        return self._classify(model, batch)


def left_align(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move right padding to the left so every sequence ends at the last column.

    Then the answer slot of every row is position -1 and the LM head runs on one position only
    (`logits_to_keep=1`) instead of on all of them, which saves the full-vocabulary projection.
    """
    length = input_ids.shape[1]
    shift = length - attention_mask.sum(dim=1, keepdim=True)
    source = (torch.arange(length, device=input_ids.device).unsqueeze(0) - shift) % length
    return input_ids.gather(1, source), attention_mask.gather(1, source)


class VerbalizerClassification(_Classification):
    """Score each label's word at the answer position of a causal LM (PET-style cloze, zero-shot capable).

    Args:
        label_words: Label name -> verbalizer word. Labels not listed use their own name.
            Each word is scored by its first token (with a leading space by default), and
            those first tokens must differ between labels.
        prefix_space: Prepend a space to each word before tokenizing it (the word follows the prompt).
        adversarial: Adversarial fine-tuning on the input embeddings during training
            (lightning_peft.tasks.FreeLB or SMART); null: the plain cross-entropy.
    """

    def __init__(self, label_words: dict[str, str] | None = None, prefix_space: bool = True,
                 adversarial: Adversary | None = None) -> None:
        self.label_words = dict(label_words or {})
        self.prefix_space = prefix_space
        self.adversarial = adversarial

    def bind(self, tokenizer: PreTrainedTokenizerBase, label_names: list[str] | None) -> None:
        super().bind(tokenizer, label_names)
        unknown = sorted(set(self.label_words) - set(self.label_names))
        if unknown:
            raise TaskConfigError(
                f"label_words names labels {unknown} that are not in the data's labels {self.label_names}; fix the spelling."
            )
        words = [self.label_words.get(label, label) for label in self.label_names]
        ids = [tokenizer.encode((" " if self.prefix_space else "") + w, add_special_tokens=False) for w in words]
        if any(not i for i in ids):
            raise TaskConfigError(f"A verbalizer word in {words} tokenizes to nothing; give every label a non-empty word.")
        first = [i[0] for i in ids]
        clashes = {w for w, t in zip(words, first) if first.count(t) > 1}
        if clashes:
            raise TaskConfigError(
                f"Verbalizer words {sorted(clashes)} start with the same token, so they cannot be told apart; "
                "choose words with distinct first tokens in task.label_words."
            )
        self.words = words
        self.label_token_ids = torch.tensor(first)

    def verbalizer_words(self) -> dict[str, str]:
        return dict(zip(self.label_names, self.words))

    def scores(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Class scores [B, classes]: the LM's logits for each label word at the answer position."""
        input_ids, attention_mask = left_align(input_ids, attention_mask)
        position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
        logits = model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, logits_to_keep=1
        ).logits[:, -1]
        return logits.index_select(-1, self.label_token_ids.to(logits.device))

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> TaskOutput:
        return self._classify(model, batch)
