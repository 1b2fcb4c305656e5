"""Text-to-text data for encoder-decoder models: source ids in, target ids as labels."""

from __future__ import annotations

from typing import Any, Union

from lightning_peft.data.base import Record, TokenizedDataModule
from lightning_peft.data.errors import DataConfigError
from lightning_peft.data.formats import InputFormat
from lightning_peft.data.tokenized import Store, flatten


class Seq2SeqData(TokenizedDataModule):
    """Seq2seq batches `{"input_ids", "attention_mask", "labels"}`; `labels` are target ids, -100 on padding.

    Classification datasets give (text -> label word) pairs; SFT datasets (prompt -> response) pairs:
    with the default columns, an SFT catalog entry switches to its `prompt`/`response` columns.

    Args:
        dataset: Catalog name (classification or SFT kind), a local .jsonl/.json/.csv/.parquet file, a Hub dataset
            name, or a `datasets.Dataset`/`DatasetDict` (see `TokenizedDataModule`).
        tokenizer: Model name or tokenizer object; may be null here if the CLI links it from the model.
        source_column: Column holding the source text; the template sees it as `{text}`.
        target_column: Column holding the target text (e.g. the label word).
        source_template: Python format string for the source, filled from the record.
        max_source_length: Maximum source tokens (cut at the end).
        max_target_length: Maximum target tokens including the final EOS.
        **shared: batch_size, eval_batch_size, val_size, test_size, max_train_examples, max_eval_examples,
            split_seed, order_seed, bucket_by_length, num_workers (see `TokenizedDataModule`).

    Example::

        dm = Seq2SeqData("trec6", tokenizer="tiny-t5", source_template="question: {text}")
    """

    accepted_kinds = ("classification", "sft")
    collate_kind = "seq2seq"

    def __init__(
        self,
        dataset: Union[str, Any] = "trec6",
        tokenizer: Union[str, Any, None] = None,
        source_column: str = "text",
        target_column: str = "label",
        source_template: str = "{text}",
        max_source_length: int = 128,
        max_target_length: int = 16,
        **shared: Any,
    ) -> None:
        super().__init__(dataset, tokenizer, **shared)
        for name, value, least in (("max_source_length", max_source_length, 1), ("max_target_length", max_target_length, 2)):
            if not isinstance(value, int) or value < least:
                raise DataConfigError(f"{name} must be an integer >= {least}, got {value!r}.")
        entry = self.catalog_entry
        if entry is not None and entry.kind == "sft" and (source_column, target_column) == ("text", "label"):
            source_column, target_column = "prompt", "response"
        self.source_column = source_column
        self.target_column = target_column
        self.source_template = source_template
        self.max_source_length = max_source_length
        self.max_target_length = max_target_length


    @property
    def input_length_limit(self) -> int:
        return self.max_source_length

    @property
    def input_format(self) -> InputFormat:
        return InputFormat(column=self.source_column, template=self.source_template, slot="text",
                           max_length=self.max_source_length)

    def prepare_records(self, records: list[Record]) -> list[Record]:
        return self.pair_records(records, (self.source_column, "source_column"), (self.target_column, "target_column"))

    def cache_fields(self) -> dict[str, Any]:
        return {"kind": "seq2seq", "columns": [self.source_column, self.target_column],
                "template": self.source_template, "max_source_length": self.max_source_length,
                "max_target_length": self.max_target_length}

    def tokenize(self, records: list[Record], tokenizer: Any) -> Store:
        sources = [self.input_format.text(r, argument="source_template") for r in records]
        source_ids = tokenizer(sources, truncation=True, max_length=self.max_source_length)["input_ids"]
        target_ids = tokenizer([str(r[self.target_column]) for r in records], add_special_tokens=False)["input_ids"]
        eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
        # EOS is appended by hand: T5's tokenizer adds it itself, causal-LM tokenizers used with tiny T5s do not.
        targets = [list(ids)[: self.max_target_length - len(eos)] + eos for ids in target_ids]
        return {**flatten(source_ids, "input_ids"), **flatten(targets, "target_ids")}
