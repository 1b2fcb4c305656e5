"""(anchor, positive, domain) batches for embedding training with the multiple-negatives-ranking loss.

Hallee et al. 2024, "Contrastive Learning and Mixture of Experts Enables Precise Vector Embeddings",
arXiv:2401.15713: pairs of related texts, each with the domain that routes it to its expert. Here by
default `bbc_news`: each article's first line (its title) is the anchor, the rest (its body) the
positive, and its topic the domain. A file or dataset with its own pair columns works too.

A batch of B pairs is `input_ids`/`attention_mask` with the B anchors then the B positives (one
forward pass embeds both), and `domain` [B], indexes into `domain_names`. Validation and test batches
are the same, over the held-out pairs, which the module scores by retrieval.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import torch

from lightning_peft.data.base import Record, TokenizedDataModule, require_columns
from lightning_peft.data.collate import pad_right
from lightning_peft.data.errors import DataConfigError
from lightning_peft.data.tokenized import Store, flatten

SINGLE_DOMAIN = "all"  # the domain of every pair when the data has no domain column


def title_and_body(text: str) -> tuple[str, str]:
    """An article's first non-empty line and the rest, stripped (bbc_news: the title, a blank line, the body)."""
    title, _, body = text.strip().partition("\n")
    return title.strip(), body.strip()


class PairCollator:
    """B examples -> `input_ids`/`attention_mask` [2B, T] (anchors, then positives), `domain` [B]."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        texts = [item["input_ids"] for item in items] + [item["target_ids"] for item in items]
        return {"input_ids": pad_right(texts, self.pad_token_id), "attention_mask": pad_right([[1] * len(t) for t in texts], 0),
                "domain": torch.tensor([item["label"] for item in items], dtype=torch.long)}


class EmbeddingPairData(TokenizedDataModule):
    """(anchor, positive, domain) batches; seeded train / validation / test splits of the pairs.

    Example::

        dm = EmbeddingPairData("bbc_news", tokenizer="minilm-l6", max_length=128)
        dm.setup()
        dm.domain_names  # ['business', 'entertainment', 'politics', 'sports', 'tech']

    Args:
        dataset: Catalog name (default bbc_news), a local .jsonl/.json/.csv/.parquet file, a Hub dataset name, or a
            `datasets` object (see `TokenizedDataModule`).
        tokenizer: Model name or tokenizer object; linked from the model by the CLI.
        text_column: With `anchor_column` null: the column whose first line is the anchor and the rest the positive
            (bbc_news' title and body).
        anchor_column: Column of the anchors, with `positive_column`; null: split `text_column`.
        positive_column: Column of the positives.
        domain_column: Column of the domains (bbc_news: its topic); null: one domain, "all", for every pair.
        domain_names: Domains in index order; default: the catalog's labels, else the sorted domains of the data.
        max_length: Maximum tokens per text (anchor and positive truncated separately).
        **shared: batch_size, eval_batch_size, val_size, test_size, max_train_examples, max_eval_examples,
            split_seed, order_seed, bucket_by_length, num_workers (see `TokenizedDataModule`).
    """

    accepted_kinds = ("classification", "sft", "text")

    def __init__(self, dataset: Union[str, Any] = "bbc_news", tokenizer: Union[str, Any, None] = None,
                 text_column: str = "text", anchor_column: Optional[str] = None, positive_column: Optional[str] = None,
                 domain_column: Optional[str] = "label", domain_names: Optional[list[str]] = None, max_length: int = 128,
                 bucket_by_length: bool = False, **shared: Any) -> None:
        # bucket_by_length off by default: the loss takes the other pairs of a batch as negatives, so batches
        # should be random, not pairs of similar length.
        super().__init__(dataset, tokenizer, bucket_by_length=bucket_by_length, **shared)
        if not isinstance(max_length, int) or max_length < 2:
            raise DataConfigError(f"max_length must be an integer >= 2, got {max_length!r}.")
        if (anchor_column is None) != (positive_column is None):
            raise DataConfigError("Set both anchor_column and positive_column (pair columns), or neither (split "
                                  "text_column into its first line and the rest).")
        if domain_names is not None and (not domain_names or len(set(domain_names)) != len(domain_names)):
            raise DataConfigError(f"domain_names must list distinct domains, got {domain_names}.")
        self.text_column, self.anchor_column, self.positive_column = text_column, anchor_column, positive_column
        self.domain_column, self.max_length = domain_column, max_length
        self._domain_names = None if domain_names is None else [str(d) for d in domain_names]

    @property
    def input_length_limit(self) -> int:
        return self.max_length

    @property
    def domain_names(self) -> list[str]:
        """Domains in index order: given, else the catalog's labels, else the sorted domains of the data."""
        if self._domain_names is None:
            entry = self.catalog_entry
            if self.domain_column is None:
                self._domain_names = [SINGLE_DOMAIN]
            elif entry is not None and entry.labels and self.domain_column == "label":
                self._domain_names = list(entry.labels)
            else:
                records = self.read_data().records
                require_columns(records, [self.domain_column], self.dataset, "domain_column")
                self._domain_names = sorted({str(r[self.domain_column]) for r in records})
        return list(self._domain_names)

    def _pair(self, record: Record) -> tuple[str, str]:
        if self.anchor_column is None:
            return title_and_body(str(record.get(self.text_column) or ""))
        return str(record.get(self.anchor_column) or "").strip(), str(record.get(self.positive_column) or "").strip()

    def prepare_records(self, records: list[Record]) -> list[Record]:
        if not records:
            raise DataConfigError(f"Dataset {self.dataset!r} is empty; point dataset at a file with examples.")
        columns = [self.text_column] if self.anchor_column is None else [self.anchor_column, self.positive_column]
        require_columns(records, columns + ([self.domain_column] if self.domain_column else []), self.dataset,
                        "text_column / anchor_column / positive_column / domain_column")
        kept = [r for r in records if all(self._pair(r))]
        if not kept:
            raise DataConfigError(f"Dataset {self.dataset!r} has no (anchor, positive) pair: every record lacks one of "
                                  "them (a text without a second line?); check text_column or the pair columns.")
        if self.domain_column is not None:
            unknown = sorted({str(r[self.domain_column]) for r in kept} - set(self.domain_names))
            if unknown:
                raise DataConfigError(f"Dataset {self.dataset!r} has domains {unknown[:5]} that are not in domain_names "
                                      f"{self.domain_names}; add them or filter the data.")
        return kept

    def cache_fields(self) -> dict[str, Any]:
        return {"kind": "embedding_pairs", "columns": [self.text_column, self.anchor_column, self.positive_column,
                                                       self.domain_column],
                "max_length": self.max_length, "domain_names": self.domain_names}

    def tokenize(self, records: list[Record], tokenizer: Any) -> Store:
        anchors, positives = zip(*(self._pair(r) for r in records))
        encode = lambda texts: tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]  # noqa: E731
        index = {name: k for k, name in enumerate(self.domain_names)}
        domains = [0 if self.domain_column is None else index[str(r[self.domain_column])] for r in records]
        return {**flatten(encode(anchors), "input_ids"), **flatten(encode(positives), "target_ids"),
                "label": torch.tensor(domains, dtype=torch.long)}

    def collator(self) -> PairCollator:
        return PairCollator(self.pad_token_id)
