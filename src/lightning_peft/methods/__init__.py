"""Methods: pure PyTorch transforms of a `transformers` model that return named parameter groups.

Every class here that is not abstract is a method: `tests/methods/test_contract.py` runs each
through the same life cycle (apply, train, checkpoint, export, reload, generate).
"""

from .base import (Adapted, Capabilities, Method, MethodBase, MethodConfigError, SelectiveMethod, SoftPromptMethod, freeze,
                   trainable_groups)
from .bottleneck import AdapterMethod, BottleneckAdapter
from .dept import EPT, DePT
from .domain_experts import DomainExperts
from .iapt import IAPT, IAPTModel
from .lora import IA3, Lora, PeftMethod
from .peft_backed import PeftBacked
from .prompts import PrefixTuning, PromptTuning
from .selective import HFT, BitFit, EmbeddingsAndHead, FullFineTuning, HalfSelection, LastBlock, transformer_layers
from .soft_prompt_io import PromptedMethod

__all__ = ["EPT", "HFT", "IAPT", "IA3", "Adapted", "AdapterMethod", "BitFit", "BottleneckAdapter", "Capabilities", "DePT", "DomainExperts", "EmbeddingsAndHead", "FullFineTuning",
           "HalfSelection", "IAPTModel", "LastBlock", "Lora", "Method", "MethodBase", "MethodConfigError", "PeftBacked",
           "PeftMethod", "PrefixTuning", "PromptTuning", "PromptedMethod", "SelectiveMethod", "SoftPromptMethod", "freeze",
           "trainable_groups", "transformer_layers"]
