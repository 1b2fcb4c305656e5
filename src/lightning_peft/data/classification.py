"""Text classification data: a template turns each record into text, the label into a class index."""

from __future__ import annotations

from typing import Any, Optional, Protocol, Sequence, Union, runtime_checkable

from lightning_peft.data.base import Record, TokenizedDataModule, require_columns
from lightning_peft.data.errors import DataConfigError
from lightning_peft.data.formats import InputFormat, check_no_label_slot, check_text_slot
from lightning_peft.data.tokenized import Store, flatten


@runtime_checkable
class TrainingTexts(Protocol):
    """Data that can hand over its training split's raw input text (labels unused; never validation or test)."""

    def training_texts(self) -> list[str]: ...


class ClassificationData(TokenizedDataModule):
    """Classification batches `{"input_ids", "attention_mask", "labels"}` with `labels` indexing `label_names`.

    Args:
        dataset: Catalog name (`lightning-peft datasets` lists them), a local .jsonl/.json/.csv/.parquet file, a Hub
            dataset name, or a `datasets.Dataset`/`DatasetDict` (see `TokenizedDataModule`).
        tokenizer: Model name (zoo short name, hub id or folder) or a tokenizer object; linked from the model
            by the CLI, so it may be null here but must be set before `setup()`.
        text_column: Column holding the input text; the template sees it as `{text}`.
        label_column: Column holding the class label.
        template: Python format string filled from the record, e.g. "Question: {text}\\nAnswer type:".
        label_names: Class names in index order; default: the catalog's fixed order, a `ClassLabel` column's
            names, or the sorted labels of the data.
        max_length: Maximum tokens per input; a longer input loses the end of its `{text}`, never the template's cue after it.
        **shared: batch_size, eval_batch_size, val_size, test_size, max_train_examples, max_eval_examples,
            split_seed, order_seed, bucket_by_length, num_workers (see `TokenizedDataModule`).

    Example::

        dm = ClassificationData("trec6", tokenizer="smollm2-135m", template="Question: {text}\\nAnswer type:")
        dm.setup()
        batch = next(iter(dm.train_dataloader()))
    """

    accepted_kinds = ("classification",)
    collate_kind = "classification"

    def __init__(
        self,
        dataset: Union[str, Any] = "trec6",
        tokenizer: Union[str, Any, None] = None,
        text_column: str = "text",
        label_column: str = "label",
        template: str = "{text}",
        label_names: Optional[Sequence[str]] = None,
        max_length: int = 128,
        **shared: Any,
    ) -> None:
        super().__init__(dataset, tokenizer, **shared)
        if not isinstance(max_length, int) or max_length < 1:
            raise DataConfigError(f"max_length must be a positive integer, got {max_length!r}.")
        check_text_slot(template)
        check_no_label_slot(template, label_column)
        if label_names is not None:
            booleans = [name for name in label_names if isinstance(name, bool)]
            if booleans:
                raise DataConfigError(f"label_names holds the boolean(s) {booleans}: YAML reads unquoted yes/no/on/off/"
                                      "true/false as booleans; quote the label words (e.g. ['yes', 'no']).")
            label_names = [str(name) for name in label_names]
            if len(label_names) < 2 or len(set(label_names)) != len(label_names):
                raise DataConfigError(f"label_names must list at least two distinct classes, got {label_names}.")
        self.text_column = text_column
        self.label_column = label_column
        self.template = template
        self._label_names = label_names
        self.max_length = max_length


    @property
    def input_length_limit(self) -> int:
        return self.max_length

    @property
    def input_format(self) -> InputFormat:
        return InputFormat(column=self.text_column, template=self.template, slot="text", max_length=self.max_length)

    @property
    def label_names(self) -> list[str]:
        """Class names in index order: given, else the catalog's order, else a `ClassLabel` column's order,
        else the sorted labels of the data (read on first use)."""
        if self._label_names is None:
            entry = self.catalog_entry
            if entry is not None and entry.labels:
                self._label_names = list(entry.labels)
            else:
                loaded = self.read_data()
                names = loaded.class_names.get(self.label_column)
                self._label_names = list(names) if names else sorted(self._check(loaded.records)[1])
                if len(self._label_names) < 2:  # torchmetrics would fail late on num_classes=1
                    raise DataConfigError(
                        f"Dataset {self.dataset!r} has only one class, {self._label_names}, in label_column "
                        f"{self.label_column!r}; classification needs at least two, so check label_column or add "
                        "examples of the other classes.")
        return list(self._label_names)

    def _check(self, records: list[Record]) -> tuple[list[Record], set[str]]:
        if not records:
            raise DataConfigError(f"Dataset {self.dataset!r} is empty; point dataset at a file with examples.")
        require_columns(records, [self.text_column], self.dataset, "text_column")
        require_columns(records, [self.label_column], self.dataset, "label_column")
        kept, unlabeled = [], []  # unlabeled: 1-based numbers of kept examples whose label is empty ('' in a CSV)
        for number, record in enumerate(records, start=1):
            if str(record.get(self.text_column) or "").strip() and record.get(self.label_column) is not None:
                kept.append(record)
                if not str(record[self.label_column]).strip():
                    unlabeled.append(number)
        if not kept:
            raise DataConfigError(f"Dataset {self.dataset!r} has no usable examples: every record's {self.text_column!r} "
                                  f"or {self.label_column!r} is empty; check the file and text_column/label_column.")
        if unlabeled:
            raise DataConfigError(
                f"Dataset {self.dataset!r} has {len(unlabeled)} example(s) with an empty label (the first is example "
                f"{unlabeled[0]}); fill in column {self.label_column!r} or remove those rows.")
        return kept, {str(r[self.label_column]) for r in kept}

    def prepare_records(self, records: list[Record]) -> list[Record]:
        kept, seen = self._check(records)
        unknown = sorted(seen - set(self.label_names))
        if unknown:
            raise DataConfigError(
                f"Dataset {self.dataset!r} has labels {unknown[:5]} that are not in label_names {self.label_names}; "
                f"add them to label_names or filter the data."
            )
        return kept

    def training_texts(self) -> list[str]:
        """The `text_column` of every training example, labelled or not (`TrainingTexts`), in the split's order."""
        return [str(record[self.text_column]) for record in self.split_records("train")]

    def cache_fields(self) -> dict[str, Any]:
        return {"kind": "classification", "truncation": "text-only", "columns": [self.text_column, self.label_column],
                "template": self.template, "max_length": self.max_length, "label_names": self.label_names}

    def encode(self, records: list[Record], tokenizer: Any, template: str, argument: str = "template") -> list[list[int]]:
        """Token ids of every record written with `template` (`argument` names it in errors); see
        `InputFormat.encode_keeping_cue` for how a record too long for `max_length` is cut."""
        return self.input_format.with_template(template).encode_keeping_cue(records, tokenizer, argument)

    def tokenize(self, records: list[Record], tokenizer: Any) -> Store:
        import torch

        ids = self.encode(records, tokenizer, self.template)
        index = {name: k for k, name in enumerate(self.label_names)}
        labels = torch.tensor([index[str(r[self.label_column])] for r in records], dtype=torch.long)
        return {**flatten(ids, "input_ids"), "label": labels}
