"""Methods: pure PyTorch transforms of a `transformers` model that return named parameter groups."""

from .base import Adapted, Method, MethodConfigError, freeze, trainable_groups
from .lora import IA3, Lora, PeftMethod, export_adapter, merge_adapter

__all__ = ["Adapted", "IA3", "Lora", "Method", "MethodConfigError", "PeftMethod", "export_adapter", "freeze",
           "merge_adapter", "trainable_groups"]
