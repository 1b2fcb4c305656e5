"""LightningModules, one per method family; thin compositions of tasks and methods."""

from .base import FineTuneModule
from .lora import LoraModule
from .selective import SelectiveModule
from .soft_prompt import SoftPromptModule

__all__ = ["FineTuneModule", "LoraModule", "SelectiveModule", "SoftPromptModule"]
