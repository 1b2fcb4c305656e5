"""Entity-level micro F1 over BIO tag sequences, as CoNLL's `conlleval` and `seqeval`'s default mode count it.

An entity is a maximal run of tags of one type that starts with `B-<type>`, or with `I-<type>` after
`O` or after a tag of another type (IOB1 data starts entities with `I-`); it ends before the next
`O`, `B-` or tag of another type. A predicted entity is correct when its type, first and last word
all equal a gold entity's (Tjong Kim Sang & De Meulder 2003, "Introduction to the CoNLL-2003 Shared
Task: Language-Independent Named Entity Recognition").
"""

from __future__ import annotations

from typing import Sequence

import torch
from torchmetrics import Metric

from ..constants import IGNORE_INDEX

Span = tuple[str, int, int]  # (type, first word, last word)


def is_bio(label_names: Sequence[str]) -> bool:
    """True when every tag is O, B-<type> or I-<type> and at least one is not O: entities can be read."""
    entity_tags = [tag for tag in label_names if tag != "O"]
    return bool(entity_tags) and all(tag.startswith(("B-", "I-")) and len(tag) > 2 for tag in entity_tags)


def entity_spans(tags: Sequence[str]) -> set[Span]:
    """The entities of one sentence's BIO tags, as (type, first word, last word)."""
    spans: set[Span] = set()
    start, kind = None, ""
    for position, tag in enumerate([*tags, "O"]):  # the trailing O closes an entity at the sentence end
        prefix, _, label = tag.partition("-")
        if start is not None and not (prefix == "I" and label == kind):
            spans.add((kind, start, position - 1))
            start = None
        if prefix == "B" or (prefix == "I" and start is None):
            start, kind = position, label
    return spans


class EntityF1(Metric):
    """Micro F1 of exact entity matches over every sentence seen (and every rank).

    `update(preds, target)` takes tag indices `[batch, length]` into `label_names`; the positions where
    `target` is -100 (padding, special tokens, a word's later pieces) are dropped, so what is left of
    each row is its sentence's words in order.

    Example::

        metric = EntityF1(["O", "B-PER", "I-PER"])
        metric.update(torch.tensor([[1, 2, 0]]), torch.tensor([[1, 2, 0]]))
        metric.compute()  # tensor(1.)
    """

    higher_is_better = True
    full_state_update = False

    def __init__(self, label_names: Sequence[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.label_names = list(label_names)
        for name in ("correct", "predicted", "gold"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        for row_preds, row_target in zip(preds.tolist(), target.tolist()):
            words = [(p, t) for p, t in zip(row_preds, row_target) if t != IGNORE_INDEX]
            predicted = entity_spans([self.label_names[p] for p, _ in words])
            gold = entity_spans([self.label_names[t] for _, t in words])
            self.correct += len(predicted & gold)
            self.predicted += len(predicted)
            self.gold += len(gold)

    def compute(self) -> torch.Tensor:
        """2PR/(P+R) = 2·correct/(predicted+gold); 0 when there is neither a predicted nor a gold entity."""
        return 2 * self.correct.float() / (self.predicted + self.gold).clamp(min=1).float()
