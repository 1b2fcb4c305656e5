"""Classify records with a trained classification task: a label and class probabilities per record."""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import torch

from ..data.formats import InputFormat
from ..tasks import Classifies
from .loading import Runnable


def _batches(records: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for record in records:
        batch.append(record)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _padded(ids: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded `input_ids` and `attention_mask` (the layout the tasks' `scores` read)."""
    width = max(len(row) for row in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return input_ids.to(device), mask.to(device)


@torch.inference_mode()
def classify(runnable: Runnable, records: Iterable[dict[str, Any]], batch_size: int = 32) -> Iterator[dict[str, Any]]:
    """For each record, `{"label": name, "probabilities": {name: p}}`, in input order.

    The text is written with the training run's `InputFormat` (same template, same truncation);
    probabilities are the softmax of the task's class scores (for a verbalizer: over the label words).
    """
    task, fmt = runnable.task, runnable.input_format
    if not isinstance(task, Classifies):
        raise ValueError(f"{type(task).__name__} does not predict classes; use `lightning-peft generate` for text.")
    fmt = fmt if fmt is not None else InputFormat()
    tokenizer = runnable.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(runnable.model.parameters()).device
    for batch in _batches(records, batch_size):
        input_ids, mask = _padded(fmt.encode_keeping_cue(batch, tokenizer), pad_id, device)
        probabilities = task.scores(runnable.model, input_ids, mask).float().softmax(-1).cpu()
        for row in probabilities:
            yield {"label": task.label_names[int(row.argmax())],
                   "probabilities": {name: round(float(p), 6) for name, p in zip(task.label_names, row)}}
