"""`packed_sdpa`: PyTorch's scaled-dot-product attention that attends per example in a packed row.

A packed SFT batch (`SFTData(packing=True)`) is one row holding several examples back to back, with
`position_ids` restarting at 0 for each and no attention mask. Under "sdpa", transformers turns the
restarts into a block-diagonal causal mask over the whole row and attends over all of it: a row of
T tokens costs T^2 scores however short its examples are, and the masked kernel path is slower
than the causal one. flash-attention's varlen kernel (`flash_attention_2`, CUDA) attends per example
instead; this is the same for any device with PyTorch's own kernel.

`packed_sdpa` splits a packed row at its position restarts and runs sdpa with `is_causal` on each
example (examples' lengths squared instead of the row's), when the row's mask is exactly the one
transformers builds from the restarts. Everything else (padded batches, batches of several rows, a
mask of the user's, a cache, `torch.compile` tracing) goes to transformers' "sdpa" unchanged, with
the same mask.

Importing this module registers it with transformers' `AttentionInterface` (and, as "sdpa", with its
mask interface); then pass `attn_implementation="packed_sdpa"` to `from_pretrained`, or let
`FineTuneModule` choose it for packed data. Splitting a row reads its boundaries on the host: on a
GPU that is a device sync per layer, and flash-attention's varlen kernel is the better choice there.
"""

from __future__ import annotations

import weakref

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, find_packed_sequence_indices, sdpa_mask

PACKED_SDPA = "packed_sdpa"


def supports_packed_sdpa(model_class: type | None) -> bool:
    """Whether a `transformers` model class can run `packed_sdpa`: it supports sdpa and reads its attention
    function from `AttentionInterface` (transformers refuses any "*sdpa" kernel for a class without sdpa)."""
    return bool(getattr(model_class, "_supports_sdpa", False) and getattr(model_class, "_supports_attention_backend", False))


def example_lengths(position_ids: torch.Tensor | None, length: int) -> list[int] | None:
    """Lengths of the examples of a single packed row, cut where transformers cuts it (positions not counting up by 1).

    None when there is nothing to split: no position ids, several rows, or one example.
    """
    if position_ids is None or position_ids.shape != (1, length):
        return None
    example = find_packed_sequence_indices(position_ids)  # e.g. [[0, 0, 0, 1, 1, 2]]; None for one example
    return None if example is None else torch.bincount(example[0]).tolist()


# Every layer of a forward receives the same mask object: check it once.
_checked: tuple[weakref.ref, tuple[int, ...], bool] | None = None


def _is_packing_mask(attention_mask: torch.Tensor | None, lengths: list[int]) -> bool:
    """Whether the mask is the block-diagonal causal one transformers builds for a packed row, and nothing else.

    transformers builds it only when no attention mask was passed; a mask of None means the caller's
    mask, or a cache, made it skip packed-sequence detection: then the row attends as a whole.
    """
    global _checked
    if attention_mask is None or attention_mask.dtype != torch.bool or attention_mask.shape != (1, 1, sum(lengths), sum(lengths)):
        return False
    key = tuple(lengths)
    if _checked is None or _checked[0]() is not attention_mask or _checked[1] != key:
        device = attention_mask.device
        example = torch.repeat_interleave(torch.arange(len(lengths), device=device), torch.tensor(lengths, device=device))
        expected = (example[:, None] == example[None, :]).tril()
        _checked = (weakref.ref(attention_mask), key, torch.equal(attention_mask[0, 0], expected))
    return _checked[2]


def packed_sdpa_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers attention function: sdpa per example of a packed row, transformers' sdpa otherwise."""
    lengths = None
    if query.shape[0] == 1 and key.shape[2] == query.shape[2] and not torch.compiler.is_compiling():
        lengths = example_lengths(kwargs.get("position_ids"), query.shape[2])
    if lengths is None or not _is_packing_mask(attention_mask, lengths):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    # split, not slices: the backward of a split is one concatenation, that of each slice a zero-filled full-size copy
    outputs = [sdpa_attention_forward(module, q, k, v, None, **kwargs)[0]
               for q, k, v in zip(query.split(lengths, dim=2), key.split(lengths, dim=2), value.split(lengths, dim=2))]
    return torch.cat(outputs, dim=1), None


AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention)
AttentionMaskInterface.register(PACKED_SDPA, sdpa_mask)
