"""Callbacks that work with any LightningModule (they never import our modules)."""

from .run_summary import RunSummary

__all__ = ["RunSummary"]
