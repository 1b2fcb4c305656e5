"""The batch layout of possibility exploration: one context's matching and mismatched (prompt, response) rows.

A stored example is one context: its prompts `prompt_k` (the same context naming possibility number
#k) and responses `response_k`, in pairs. The collator turns each context into rows:

- matching rows `prompt_k + response_k`: `labels` are the response ids (MLE), -100 on the prompt;
- mismatched rows `prompt_k + response_j` (j != k): `labels` all -100, `unlikelihood_labels` the
  response ids on content-word lead tokens (`data/content_words.py`) and -100 elsewhere.

Mismatched pairs are taken in a fixed, balanced order (every prompt with the response one after
it, then two after it, ...), the first `max_negatives` of a context's K*(K-1); the reference code
shuffles them at random before capping, which with a cap >= K*(K-1) (its setting) keeps them all too.
"""

from __future__ import annotations

from typing import Any

import torch

from lightning_peft.constants import IGNORE_INDEX
from lightning_peft.data.collate import pad_right
from lightning_peft.data.sft import truncate_pair
from lightning_peft.data.tokenized import TokenizedDataset

PAIR_COLUMNS = ("prompt_ids", "response_ids", "lead_mask")


class ContextGroups(TokenizedDataset):
    """Examples are contexts; each item is `{"prompt_ids", "response_ids", "lead_mask"}`, lists over its pairs.

    The store holds one flat column per entry of `PAIR_COLUMNS` (one sequence per pair, see
    `tokenized.flatten`) and `pair_offsets` (context `i` owns pairs `pair_offsets[i]:pair_offsets[i+1]`).
    """

    def _pairs(self, example: int) -> range:
        offsets = self.store["pair_offsets"]
        return range(int(offsets[example]), int(offsets[example + 1]))

    def __getitem__(self, position: int) -> dict[str, Any]:
        pairs = self._pairs(self.indices[position])
        return {column: [self._sequence(column, pair) for pair in pairs] for column in PAIR_COLUMNS}

    def lengths(self) -> list[int]:
        sizes = self.store["prompt_ids_offsets"].diff() + self.store["response_ids_offsets"].diff()
        offsets = self.store["pair_offsets"]
        return [int(sizes[offsets[example]:offsets[example + 1]].sum()) for example in self.indices]


def mismatched_pairs(count: int, cap: int) -> list[tuple[int, int]]:
    """The first `cap` of the (prompt, response) index pairs with prompt != response, in the balanced order."""
    pairs = [(k, (k + shift) % count) for shift in range(1, count) for k in range(count)]
    return pairs[:cap]


class PossibilityCollator:
    """Contexts -> `{"input_ids", "attention_mask", "labels", "unlikelihood_labels"}` (right-padded rows).

    Args:
        pad_token_id: Padding id of `input_ids`.
        max_length: Longest row; a mismatched row that is longer loses the start of its prompt.
        max_negatives: The most mismatched rows per context (0: matching rows only, i.e. plain SFT rows).
    """

    def __init__(self, pad_token_id: int, max_length: int, max_negatives: int) -> None:
        self.pad_token_id, self.max_length, self.max_negatives = pad_token_id, max_length, max_negatives

    def _row(self, prompt: list[int], response: list[int], lead: list[int], matching: bool) -> tuple:
        prompt, response = truncate_pair(prompt, response, self.max_length)
        ignored = [IGNORE_INDEX] * len(prompt)
        if matching:
            return prompt + response, ignored + response, ignored + [IGNORE_INDEX] * len(response)
        pushed = [token if flag else IGNORE_INDEX for token, flag in zip(response, lead)]
        return prompt + response, ignored + [IGNORE_INDEX] * len(response), ignored + pushed

    def __call__(self, contexts: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = []
        for context in contexts:
            prompts, responses, leads = (context[column] for column in PAIR_COLUMNS)
            rows += [self._row(prompts[k], responses[k], leads[k], True) for k in range(len(prompts))]
            rows += [self._row(prompts[k], responses[j], leads[j], False)
                     for k, j in mismatched_pairs(len(prompts), self.max_negatives)]
        ids, labels, pushed = zip(*rows)
        return {"input_ids": pad_right(ids, self.pad_token_id),
                "attention_mask": pad_right([[1] * len(row) for row in ids], 0),
                "labels": pad_right(labels, IGNORE_INDEX), "unlikelihood_labels": pad_right(pushed, IGNORE_INDEX)}
