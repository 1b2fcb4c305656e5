"""Callbacks that work with any LightningModule (they never import our modules)."""

from .half_finetuning import HalfFineTuning
from .run_summary import RunSummary

__all__ = ["HalfFineTuning", "RunSummary"]
