"""Methods: pure PyTorch transforms of a `transformers` model that return named parameter groups."""

from .base import Adapted, Method, MethodConfigError, freeze, trainable_groups
from .dept import EPT, DePT
from .iapt import IAPT, IAPTModel
from .lora import IA3, Lora, PeftMethod, export_adapter, merge_adapter
from .prompts import PrefixTuning, PromptTuning
from .selective import HFT, BitFit, EmbeddingsAndHead, FullFineTuning, HalfSelection, LastBlock, transformer_layers

__all__ = ["EPT", "HFT", "IAPT", "IAPTModel", "Adapted", "DePT", "PrefixTuning", "PromptTuning", "BitFit", "EmbeddingsAndHead", "FullFineTuning", "HalfSelection", "IA3", "LastBlock",
           "transformer_layers", "Lora", "Method", "MethodConfigError", "PeftMethod", "export_adapter", "freeze",
           "merge_adapter", "trainable_groups"]
