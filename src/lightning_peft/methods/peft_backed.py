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

from peft import PeftModel
from torch import nn

from .base import Capabilities, MethodBase


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
