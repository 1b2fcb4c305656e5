"""Callbacks that work with any LightningModule (they never import our modules)."""

from .conjugate import ConjugatePromptEval
from .forgetting import ForgettingProbe
from .half_finetuning import HalfFineTuning
from .run_summary import RunSummary

__all__ = ["ConjugatePromptEval", "ForgettingProbe", "HalfFineTuning", "RunSummary"]
