"""Tokenize once, cache on disk, and serve examples from compact flat tensors.

A tokenized dataset is a dict of tensors: each token-sequence column is stored as one flat tensor
plus `offsets` (example `i` is `flat[offsets[i]:offsets[i+1]]`), per-example integers as one tensor.
The file lives under `zoo.cache_root()/data/<sha256 of everything that affects the ids>.pt`, is written
through `lightning_peft.atomic.write_file_atomically` (a killed run never leaves a half file) and read with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import Dataset

from lightning_peft import zoo
from lightning_peft.atomic import write_file_atomically

Store = dict[str, torch.Tensor]


def tokenizer_identity(tokenizer: Any) -> str:
    """Class, name_or_path and vocabulary size: what must match for cached ids to be reusable."""
    return f"{type(tokenizer).__name__}|{getattr(tokenizer, 'name_or_path', '')}|{len(tokenizer)}"


def cache_path(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    return zoo.cache_root() / "data" / f"{digest}.pt"


def cached(key: dict[str, Any], build: Callable[[], Store]) -> Store:
    """The store for `key`, built (tokenized) only when no cache file exists yet."""
    path = cache_path(key)
    if path.exists():
        try:
            return torch.load(path, weights_only=True)
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError):
            pass  # unreadable (e.g. written by an incompatible torch): rebuild and overwrite
    store = build()
    write_file_atomically(path, lambda tmp: torch.save(store, tmp))
    return store


def flatten(sequences: Sequence[Sequence[int]], prefix: str) -> Store:
    """`{prefix}`: all ids concatenated (int32 is enough for any vocabulary), `{prefix}_offsets`: boundaries."""
    offsets = torch.zeros(len(sequences) + 1, dtype=torch.long)
    offsets[1:] = torch.tensor([len(sequence) for sequence in sequences], dtype=torch.long).cumsum(0)
    flat = torch.tensor([token for sequence in sequences for token in sequence], dtype=torch.int32)
    return {prefix: flat, f"{prefix}_offsets": offsets}


SEQUENCE_COLUMNS = ("input_ids", "target_ids", "loss_mask")  # loss_mask: 1 where SFT learns the token (conversations)
SCALAR_COLUMNS = ("label", "prompt_length")


class TokenizedDataset(Dataset):
    """The examples `indices` of a store, each as a dict of Python lists and ints for the collator."""

    def __init__(self, store: Store, indices: Sequence[int]) -> None:
        self.store = store
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def _sequence(self, column: str, example: int) -> list[int]:
        offsets = self.store[f"{column}_offsets"]
        return self.store[column][offsets[example]:offsets[example + 1]].tolist()

    def __getitem__(self, position: int) -> dict[str, Any]:
        example = self.indices[position]
        item: dict[str, Any] = {c: self._sequence(c, example) for c in SEQUENCE_COLUMNS if c in self.store}
        item.update({c: int(self.store[c][example]) for c in SCALAR_COLUMNS if c in self.store})
        return item

    def lengths(self) -> list[int]:
        """Input length of every example, for length bucketing."""
        sizes = self.store["input_ids_offsets"].diff()
        return sizes[self.indices].tolist()
