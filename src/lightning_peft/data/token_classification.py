"""Token classification data: a tag per word, aligned to the word pieces a fast tokenizer makes.

Each sentence is a list of words (tokens) with one tag each. The fast tokenizer's `word_ids()` says
which word each piece comes from; the first piece of a word carries the word's tag and the others
are ignored by the loss (-100), or carry the same tag with `label_all_pieces` (the choice of Devlin
et al. 2019, "BERT", section 5.3, is the first piece). Either way a word's prediction is read at its
first piece, so metrics count words, not pieces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch

from lightning_peft.constants import IGNORE_INDEX
from lightning_peft.data.base import Record, TokenizedDataModule, require_columns
from lightning_peft.data.collate import pad_right
from lightning_peft.data.errors import DataConfigError
from lightning_peft.data.source import ALL
from lightning_peft.data.token_tags import (TagScheme, check_label_names, check_scheme, check_sentence, is_column_file,
                                            ordered_tags, read_column_file, where)
from lightning_peft.data.tokenized import Store, TokenizedDataset, flatten

TAG_COLUMNS = ("tag_ids", "word_starts")


def align_tags(word_ids: Sequence[Optional[int]], word_tags: Sequence[int],
               label_all_pieces: bool = False) -> tuple[list[int], list[int]]:
    """Per-piece training labels and word starts for one tokenized sentence.

    `word_ids[p]` is the word piece p belongs to (None for special tokens), `word_tags[w]` the tag index
    of word w. Returns `labels` (the word's tag on its first piece, and on its other pieces when
    `label_all_pieces`, else -100; -100 on special tokens) and `starts` (1 on each word's first piece).
    """
    labels, starts, previous = [], [], None
    for word in word_ids:
        first = word is not None and word != previous
        starts.append(int(first))
        labels.append(word_tags[word] if word is not None and (first or label_all_pieces) else IGNORE_INDEX)
        previous = word
    return labels, starts


class TaggedExamples(TokenizedDataset):
    """The examples of a store with their per-piece tags (`tag_ids`) and word starts besides the input ids."""

    def __getitem__(self, position: int) -> dict[str, Any]:
        item = super().__getitem__(position)
        item.update({column: self._sequence(column, self.indices[position]) for column in TAG_COLUMNS})
        return item


class TagCollator:
    """Pad a batch: `labels` with -100, `word_starts` (bool) with False, input ids with the pad token."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids = [example["input_ids"] for example in examples]
        return {"input_ids": pad_right(ids, self.pad_token_id),
                "attention_mask": pad_right([[1] * len(sequence) for sequence in ids], 0),
                "labels": pad_right([example["tag_ids"] for example in examples], IGNORE_INDEX),
                "word_starts": pad_right([example["word_starts"] for example in examples], 0).bool()}


def _column_dataset(path: Path, token_column: int, tag_column: int, keys: tuple[str, str]) -> Any:
    """A column file's sentences as an in-memory `datasets.Dataset` (what the shared sources accept)."""
    from datasets import Dataset

    records = read_column_file(path, token_column, tag_column)
    return Dataset.from_list([{keys[0]: r["tokens"], keys[1]: r["tags"], "line": r["line"]} for r in records])


class TokenClassificationData(TokenizedDataModule):
    """Token classification batches `{"input_ids", "attention_mask", "labels", "word_starts"}`.

    `labels` holds a tag index (into `label_names`) per word piece, -100 where the loss skips the piece;
    `word_starts` marks each word's first piece, where its prediction is read.

    Args:
        dataset: Catalog name (`lightning-peft datasets`, e.g. turkish_pos), a CoNLL-style column file
            (.conll, .conllu, .bio, .iob, .iob2, .tsv, .txt: one token per line, a blank line between sentences),
            a .jsonl/.json/.csv/.parquet file of records with a token list and a tag list, a Hub dataset name,
            or a `datasets.Dataset`/`DatasetDict` (see `TokenizedDataModule`).
        tokenizer: Model name (zoo short name, hub id or folder) or a fast tokenizer; linked from the model
            by the CLI, so it may be null here but must be set before `setup()`.
        tokens_column: Record field holding the list of words (tokens) of a sentence.
        tags_column: Record field holding the list of tags, one per word.
        token_column: Column files only: the column (0-based, negative counts from the end) holding the word;
            1 for CoNLL-U (FORM).
        tag_column: Column files only: the column holding the tag; -1 (the last) for CoNLL-2003's NER tags,
            3 for CoNLL-U's UPOS.
        tag_scheme: "bio" for entity tags (O, B-<type>, I-<type>; entity F1 is then reported), "plain" for any
            other tag set (part of speech). A tag outside the scheme is refused with its file and line.
        label_names: Tags in index order; default: the catalog's order, else the tags of the training data
            (bio: O, then B- and I- of each type, types sorted; plain: sorted).
        label_all_pieces: Give every piece of a word the word's tag in training (default: the first piece only).
        max_length: Maximum pieces per sentence; the words past it are cut off and not scored.
        **shared: batch_size, eval_batch_size, val_size, test_size, max_train_examples, max_eval_examples,
            split_seed, order_seed, bucket_by_length, num_workers (see `TokenizedDataModule`).

    Example::

        dm = TokenClassificationData("train.conll", tokenizer="minilm-l6")
        dm.setup()
        batch = next(iter(dm.train_dataloader()))
    """

    accepted_kinds = ("token_classification",)

    def __init__(
        self,
        dataset: Union[str, Any],
        tokenizer: Union[str, Any, None] = None,
        tokens_column: str = "tokens",
        tags_column: str = "tags",
        token_column: int = 0,
        tag_column: int = -1,
        tag_scheme: TagScheme = "bio",
        label_names: Optional[Sequence[str]] = None,
        label_all_pieces: bool = False,
        max_length: int = 128,
        **shared: Any,
    ) -> None:
        check_scheme(tag_scheme)
        if not isinstance(max_length, int) or max_length < 3:
            raise DataConfigError(f"max_length must be an integer >= 3 (a word piece and the special tokens around it), "
                                  f"got {max_length!r}.")
        self.column_file = Path(dataset).expanduser() if is_column_file(dataset) else None
        source = dataset
        if self.column_file is not None:  # read now: the shared sources take no column files, a Dataset they do
            source = _column_dataset(self.column_file, token_column, tag_column, (tokens_column, tags_column))
        super().__init__(source, tokenizer, **shared)
        if self.column_file is not None:
            self.dataset = dataset  # messages, metric keys and checkpoints name the file, not its in-memory copy
        self.tokens_column = tokens_column
        self.tags_column = tags_column
        self.tag_scheme = tag_scheme
        self._label_names = check_label_names(label_names, tag_scheme) if label_names is not None else None
        self.label_all_pieces = label_all_pieces
        self.max_length = max_length

    @property
    def input_length_limit(self) -> int:
        return self.max_length

    @property
    def label_names(self) -> list[str]:
        """Tags in index order: given, else the catalog's order, else those of the training data (read on first use)."""
        if self._label_names is None:
            entry = self.catalog_entry
            if entry is not None and entry.labels:
                self._label_names = list(entry.labels)
            else:
                parts = self.read_data().parts
                train = self._checked(parts.get("train", parts.get(ALL, [])))
                tags = ordered_tags({tag for record in train for tag in record[self.tags_column]}, self.tag_scheme)
                if len(tags) < 2:
                    raise DataConfigError(f"Dataset {self.dataset!r} has only the tag {tags} in its training data; "
                                          "token classification needs at least two, so check tags_column or the file.")
                self._label_names = tags
        return list(self._label_names)

    def _checked(self, records: list[Record]) -> list[Record]:
        """`records`, each refused in one sentence (naming its file and line) when it is not a tagged sentence."""
        if not records:
            raise DataConfigError(f"Dataset {self.dataset!r} is empty; point dataset at a file with tagged sentences.")
        require_columns(records, [self.tokens_column, self.tags_column], self.dataset, "tokens_column/tags_column")
        for index, record in enumerate(records):
            check_sentence(record, self.tokens_column, self.tags_column, self.tag_scheme, where(self.dataset, record, index))
        return records

    def prepare_records(self, records: list[Record]) -> list[Record]:
        known = set(self.label_names)
        for index, record in enumerate(self._checked(records)):
            unknown = [tag for tag in record[self.tags_column] if tag not in known]
            if unknown:
                raise DataConfigError(
                    f"{where(self.dataset, record, index)}: tag {unknown[0]!r} is not among the tags {self.label_names} "
                    "(the training data's, unless label_names sets them); add it to label_names or fix the tag.")
        return records

    def cache_fields(self) -> dict[str, Any]:
        return {"kind": "token_classification", "columns": [self.tokens_column, self.tags_column],
                "label_names": self.label_names, "label_all_pieces": self.label_all_pieces, "max_length": self.max_length}

    def tokenize(self, records: list[Record], tokenizer: Any) -> Store:
        if not tokenizer.is_fast:
            raise DataConfigError(f"{type(tokenizer).__name__} is a slow tokenizer without word_ids(), which aligning tags "
                                  "to word pieces needs; use a model whose tokenizer has a fast (tokenizers) version.")
        encoded = tokenizer([record[self.tokens_column] for record in records], is_split_into_words=True,
                            truncation=True, max_length=self.max_length)
        index = {tag: k for k, tag in enumerate(self.label_names)}
        labels, starts = [], []
        for row, record in enumerate(records):
            tags = [index[tag] for tag in record[self.tags_column]]
            row_labels, row_starts = align_tags(encoded.word_ids(row), tags, self.label_all_pieces)
            labels.append(row_labels)
            starts.append(row_starts)
        return {**flatten(encoded["input_ids"], "input_ids"), **flatten(labels, "tag_ids"),
                **flatten(starts, "word_starts")}

    def setup(self, stage: Optional[str] = None) -> None:
        super().setup(stage)
        self.datasets = {name: part if isinstance(part, TaggedExamples) else TaggedExamples(part.store, part.indices)
                         for name, part in self.datasets.items()}

    def collator(self) -> TagCollator:
        return TagCollator(self.pad_token_id)
