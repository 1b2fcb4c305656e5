"""Callbacks that work with any LightningModule (they never import our modules)."""

from .conjugate import ConjugatePromptEval
from .cpu_allocator import CpuAllocatorCache
from .dual_lr import DualLRSchedule, GroupSchedule
from .forgetting import ForgettingProbe
from .half_finetuning import HalfFineTuning
from .last_checkpoint import LastCheckpoint
from .progress import EpochRichProgressBar
from .run_summary import RunSummary
from .throughput import Throughput

__all__ = ["ConjugatePromptEval", "CpuAllocatorCache", "DualLRSchedule", "EpochRichProgressBar", "GroupSchedule", "ForgettingProbe", "HalfFineTuning", "LastCheckpoint", "RunSummary", "Throughput"]
