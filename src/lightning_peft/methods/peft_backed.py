"""The part of the `Method` contract shared by every method peft implements (LoRA family, prompt and prefix tuning).

The adapted model is a `peft.PeftModel`, so peft provides the rest: its adapters turn off in place
(`disable_adapter()`, no second copy of the base), it exports in peft's own format
(``adapter_config.json`` + ``adapter_model.safetensors``, read by `PeftModel.from_pretrained`
anywhere), and loads back the same way.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import ClassVar, Iterator

from peft import PeftModel, TaskType
from torch import nn

from .base import Capabilities, MethodBase
from .prompt_inputs import is_encoder_decoder


def peft_task_type(model: nn.Module) -> TaskType | None:
    """peft's task type for a `transformers` model (seq2seq LM, sequence or token classifier, causal LM), None for others.

    Recorded in the exported `adapter_config.json`, so `AutoPeftModel.from_pretrained` knows which
    head to load the base with.
    """
    name = type(model).__name__
    if is_encoder_decoder(model):
        return TaskType.SEQ_2_SEQ_LM
    if name.endswith("ForSequenceClassification"):
        return TaskType.SEQ_CLS
    if name.endswith("ForTokenClassification"):
        return TaskType.TOKEN_CLS
    if name.endswith(("ForCausalLM", "LMHeadModel")):
        return TaskType.CAUSAL_LM
    return None


class PeftBacked(MethodBase):
    """Base of methods whose `apply` returns a `peft.PeftModel`."""

    capabilities: ClassVar[Capabilities] = Capabilities(export=True, merge=False, disable=True)

    @contextlib.contextmanager
    def disabled(self, model: nn.Module) -> Iterator[nn.Module]:
        with model.disable_adapter():
            yield model

    def export(self, model: nn.Module, folder: Path) -> None:
        """peft's format: `PeftModel.from_pretrained(base, folder)` reads it."""
        model.save_pretrained(str(folder), safe_serialization=True)

    def load(self, base: nn.Module, folder: str | Path) -> nn.Module:
        """The exported adapter on `base`, in eval mode."""
        return PeftModel.from_pretrained(base, str(folder)).eval()
