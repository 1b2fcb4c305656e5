"""Dynamic padding: pad each batch to its longest sequence (right padding)."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from lightning_peft.constants import IGNORE_INDEX



def pad_right(sequences: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """A `[len(sequences), longest]` LongTensor with each sequence left-aligned and padded with `value`."""
    longest = max(len(sequence) for sequence in sequences)
    out = torch.full((len(sequences), longest), value, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        out[row, : len(sequence)] = torch.as_tensor(sequence, dtype=torch.long)
    return out


class PadCollator:
    """Collate `{"input_ids", ...}` examples into padded tensors; what `labels` becomes depends on `kind`.

    - `classification`: `labels` is the class index per example, `LongTensor[B]`.
    - `sft`: `labels` = `input_ids` with -100 on the first `prompt_length` tokens and on padding; an example
      with a `loss_mask` (a conversation) has -100 wherever its mask is 0 instead.
    - `seq2seq`: `labels` = the target ids, padded with -100.
    """

    def __init__(self, pad_token_id: int, kind: str) -> None:
        self.pad_token_id = pad_token_id
        self.kind = kind

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids = [example["input_ids"] for example in examples]
        input_ids = pad_right(ids, self.pad_token_id)
        attention_mask = pad_right([[1] * len(sequence) for sequence in ids], 0)
        if self.kind == "classification":
            labels = torch.tensor([example["label"] for example in examples], dtype=torch.long)
        elif self.kind == "sft":
            labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
            for row, example in enumerate(examples):
                if "loss_mask" in example:
                    mask = torch.tensor(example["loss_mask"], dtype=torch.bool)
                    labels[row, : len(mask)] = labels[row, : len(mask)].masked_fill(~mask, IGNORE_INDEX)
                else:
                    labels[row, : example["prompt_length"]] = IGNORE_INDEX
        else:
            labels = pad_right([example["target_ids"] for example in examples], IGNORE_INDEX)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
