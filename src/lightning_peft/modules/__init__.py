"""LightningModules, one per method family; thin compositions of tasks and methods."""

from .adapters import AdapterModule
from .base import FineTuneModule
from .cloze import ClozeModule
from .contrastive import ContrastiveModule
from .embedding import EmbeddingModule
from .lora import LoraModule
from .rl import PPOModule
from .selective import SelectiveModule
from .self_training import SelfTrainingModule
from .soft_prompt import SoftPromptModule
from .weighted_verbalizer import WeightedVerbalizerModule

__all__ = ["AdapterModule", "ClozeModule", "ContrastiveModule", "EmbeddingModule", "FineTuneModule", "LoraModule", "PPOModule", "SelectiveModule", "SelfTrainingModule", "SoftPromptModule",
           "WeightedVerbalizerModule"]
