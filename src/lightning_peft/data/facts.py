"""What modules may read from a data module, declared as a Protocol (no attribute probing).

Every data module of this package implements `DataFacts`; a user's own LightningDataModule may
implement it too, and one that does not is simply not checked against (modules then learn nothing
from the data).
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

from lightning_peft.data.formats import InputFormat


@runtime_checkable
class DataFacts(Protocol):
    """The facts a module reads from its data.

    Attributes:
        packing: Training batches are packed rows (several examples per row, positions restarting).
        input_length_limit: The longest input, in tokens, the data can give the model (its
            truncation length); None when unbounded.
        label_names: Class names in label-index order; None for data without classes.
        templates: Instruction phrasings the training batches carry (paraphrase data); empty otherwise.
        dataset: The catalog name, file or Hub dataset name the data reads, or the short name of a
            `datasets` object it was given (e.g. `imdb[train]`); None when it is not one (a task sequence).
        input_format: How a record becomes the model's input text (kept in checkpoints and exports, so
            `predict` and `generate` build inputs as training did); None when the data cannot say.
    """

    packing: bool
    input_length_limit: int | None
    label_names: list[str] | None
    templates: Sequence[str]
    dataset: str | None
    input_format: InputFormat | None
