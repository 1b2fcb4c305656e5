"""What a module checks about its data and trainer before it trains, callable before anything else runs.

A module whose training needs more of the data than testing does (an unlabelled pool, enough steps for a
schedule) checks that in `setup("fit")`. The CLI's `--test_before_fit` runs a whole test pass before fit's
setup, so such a module declares `ChecksFit` and the CLI calls it first: a wrong setting is then one sentence
before the test pass, not after it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import lightning as L


@runtime_checkable
class ChecksFit(Protocol):
    """A module that refuses, in one sentence, data or trainer settings it cannot train with."""

    def check_fit(self, trainer: L.Trainer, data: L.LightningDataModule | None) -> None:
        """Raise a config error when training with `trainer` on `data` (set up for fit) cannot work."""
        ...
