"""Classification data under several instruction phrasings: each training example also comes paraphrased.

For robust soft prompts (Sun, Shaib, Wallace, ICLR 2024, "Evaluating the Zero-shot Robustness of
Instruction-tuned Language Models", arXiv:2306.11270): the objective compares the model's answer to
an example under its primary instruction with its answer under a paraphrase of that instruction
(`lightning_peft.tasks.robust.RobustPrompt`).

Decisions:

- `input_ids` always use the primary (first) template, in every split, so validation and test
  measure the instruction the task loss trains on ("seen"); the paraphrases reach training only
  through the consistency term.
- Each training example gets one other template, drawn once from `split_seed` (uniform over
  templates 2..n) and fixed across epochs: the draw needs no epoch state, so a resumed run sees the
  same pairs, and over a dataset every paraphrase is used about equally often.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from lightning_peft.data.classification import ClassificationData
from lightning_peft.data.collate import PadCollator, pad_right
from lightning_peft.data.errors import DataConfigError
from lightning_peft.data.formats import check_no_label_slot, template_fields
from lightning_peft.data.tokenized import Store, TokenizedDataset, flatten

PARAPHRASE_KEYS = ("paraphrase_input_ids", "paraphrase_attention_mask")


def check_templates(templates: Sequence[str], label_column: str = "label") -> list[str]:
    """The templates as a list, or `DataConfigError` when they cannot form a paraphrase group."""
    if isinstance(templates, str) or len(templates) < 2:
        raise DataConfigError(
            f"templates needs at least two phrasings of the instruction (the first is the primary one), got {templates!r}."
        )
    templates = [str(t) for t in templates]
    for template in templates:
        if "text" not in template_fields(template):
            raise DataConfigError(f"Template {template!r} has no {{text}} slot; every phrasing must place the input with {{text}}.")
        check_no_label_slot(template, label_column, "The templates entry")
    if len(set(templates)) != len(templates):
        raise DataConfigError("templates lists the same phrasing twice; give distinct paraphrases.")
    return templates


class ParaphraseDataset(TokenizedDataset):
    """Training examples that also carry `paraphrase_input_ids`: the text under template `choices[example]`."""

    def __init__(self, store: Store, indices: Sequence[int], choices: torch.Tensor) -> None:
        super().__init__(store, indices)
        self.choices = choices

    def __getitem__(self, position: int) -> dict[str, Any]:
        item = super().__getitem__(position)
        example = self.indices[position]
        item["paraphrase_input_ids"] = self._sequence(f"paraphrase{int(self.choices[example])}_ids", example)
        return item


class ParaphraseCollator(PadCollator):
    """`PadCollator`, plus the right-padded paraphrase ids and their mask when the examples carry them."""

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = super().__call__(examples)
        if examples and "paraphrase_input_ids" in examples[0]:
            ids = [example["paraphrase_input_ids"] for example in examples]
            batch["paraphrase_input_ids"] = pad_right(ids, self.pad_token_id)
            batch["paraphrase_attention_mask"] = pad_right([[1] * len(sequence) for sequence in ids], 0)
        return batch


class ParaphraseClassificationData(ClassificationData):
    """Classification batches whose training batches also hold each example under a paraphrased instruction.

    Training batches: `input_ids`, `attention_mask`, `labels` (primary template) plus
    `paraphrase_input_ids`, `paraphrase_attention_mask` (the same example under another template).
    Validation and test batches: the primary template only, exactly as `ClassificationData`.

    Args:
        templates: Phrasings of the same instruction, each a format string with a `{text}` slot
            (e.g. ["Question: {text}\\nAnswer type:", "What kind of answer does this need? {text}\\nType:"]);
            the first is the primary one. At least two, all distinct.
        **kwargs: Every other `ClassificationData` argument (dataset, tokenizer, label_names, ...);
            not `template`, which is `templates[0]`.

    Example::

        dm = ParaphraseClassificationData(["Question: {text}\\nType:", "Classify: {text}\\nType:"],
                                          dataset="trec6", tokenizer="smollm2-135m")
        dm.setup()
        batch = next(iter(dm.train_dataloader()))  # has paraphrase_input_ids
    """

    def __init__(self, templates: list[str], **kwargs: Any) -> None:
        if "template" in kwargs:
            raise DataConfigError("ParaphraseClassificationData takes templates (a list, primary first), not template.")
        templates = check_templates(templates, kwargs.get("label_column", "label"))
        super().__init__(template=templates[0], **kwargs)
        self.templates = templates

    def cache_fields(self) -> dict[str, Any]:
        return {**super().cache_fields(), "templates": self.templates}

    def tokenize(self, records: list[dict[str, Any]], tokenizer: Any) -> Store:
        store = super().tokenize(records, tokenizer)
        for number, template in enumerate(self.templates[1:], start=1):
            store.update(flatten(self.encode(records, tokenizer, template, "templates"), f"paraphrase{number}_ids"))
        return store

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        train = self.datasets["train"]
        if not isinstance(train, ParaphraseDataset):
            count = len(train.store["input_ids_offsets"]) - 1
            generator = torch.Generator().manual_seed(self.split_seed)
            choices = torch.randint(1, len(self.templates), (count,), generator=generator)
            self.datasets["train"] = ParaphraseDataset(train.store, train.indices, choices)

    def collator(self) -> ParaphraseCollator:
        return ParaphraseCollator(self.pad_token_id, self.collate_kind)
