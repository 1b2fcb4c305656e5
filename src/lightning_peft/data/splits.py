"""Deterministic train/validation/test splits from a seed."""

from __future__ import annotations

import random
from typing import Union

from lightning_peft.data.errors import DataConfigError

SplitSize = Union[int, float]


def check_split_size(name: str, size: SplitSize) -> None:
    """Reject a size that is neither a count >= 0 nor a fraction in [0, 1)."""
    if isinstance(size, bool) or not isinstance(size, (int, float)):
        raise DataConfigError(f"{name} must be a fraction in [0, 1) or an example count, got {size!r}.")
    if isinstance(size, float) and not 0.0 <= size < 1.0:
        raise DataConfigError(f"{name}={size} is not a fraction in [0, 1); use e.g. 0.1, or an integer count.")
    if isinstance(size, int) and size < 0:
        raise DataConfigError(f"{name}={size} is negative; use a count >= 0 or a fraction such as 0.1.")


def _count(size: SplitSize, total: int) -> int:
    return round(size * total) if isinstance(size, float) else int(size)


def split_indices(total: int, val_size: SplitSize, test_size: SplitSize, seed: int) -> dict[str, list[int]]:
    """Shuffle `range(total)` with `random.Random(seed)`; the test split comes first, then validation, rest train.

    A size of 0 means "no such split"; a positive size that rounds to no example, or splits that leave
    nothing to train on, raise `DataConfigError`.
    """
    order = list(range(total))
    random.Random(seed).shuffle(order)
    n_test, n_val = _count(test_size, total), _count(val_size, total)
    for name, size, count in (("test_size", test_size, n_test), ("val_size", val_size, n_val)):
        if size and count == 0:
            raise DataConfigError(
                f"{name}={size} leaves the {name[:-5]} split empty for {total} examples; raise it or set it to 0."
            )
    if n_test + n_val >= total:
        raise DataConfigError(
            f"val_size={val_size} and test_size={test_size} take {n_val + n_test} of {total} examples and leave "
            f"nothing to train on; make them smaller."
        )
    return {"test": order[:n_test], "validation": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}


def own_split_indices(sizes: dict[str, int], val_size: SplitSize, test_size: SplitSize,
                      seed: int) -> dict[str, list[int]]:
    """Indices for a dataset that brings its own splits, counted in the concatenation of `sizes`' parts in order.

    `sizes` names `train` and optionally `validation` and `test`. A split the dataset has is used
    whole (`val_size`/`test_size` do not apply to it); one it lacks is carved from `train` with
    `split_indices`. Every split comes in a seeded order, so taking its first examples
    (`max_train_examples`, `max_eval_examples`) is a seeded subset, as for a split pool.
    """
    offsets, start = {}, 0
    for name, size in sizes.items():
        offsets[name], start = start, start + size
    carved = split_indices(sizes["train"], 0 if "validation" in sizes else val_size,
                           0 if "test" in sizes else test_size, seed)
    result = {name: [offsets["train"] + i for i in indices] for name, indices in carved.items()}
    for name in ("validation", "test"):
        if name in sizes:
            order = list(range(offsets[name], offsets[name] + sizes[name]))
            random.Random(seed).shuffle(order)
            result[name] = order
    return result
