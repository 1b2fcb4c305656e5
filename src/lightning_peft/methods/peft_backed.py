"""The part of the `Method` contract shared by every method peft implements (LoRA family, prompt and prefix tuning).

The adapted model is a `peft.PeftModel`, so peft provides the rest: its adapters turn off in place
(`disable_adapter()`, no second copy of the base), it exports in peft's own format
(``adapter_config.json`` + ``adapter_model.safetensors``, read by `PeftModel.from_pretrained`
anywhere), and loads back the same way.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import ClassVar, Iterator, Sequence

from peft import PeftConfig, PeftModel, TaskType
from peft.utils import load_peft_weights, set_peft_model_state_dict
from torch import nn

from .base import Capabilities, MethodBase, MethodConfigError
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


def _as_set(value: object) -> object:
    return set(value) if isinstance(value, (list, tuple, set)) else value


def start_from(model: PeftModel, folder: str, settings: Sequence[str]) -> None:
    """Copy the adapter exported in `folder` into `model`'s freshly injected adapter (a warm start).

    The folder must hold peft's format (`lightning-peft export` or `save_pretrained`) of an adapter with the
    same `settings` (e.g. r, lora_alpha, target_modules) on a base of the same shapes; anything else is
    refused in one sentence naming the difference.
    """
    where = Path(folder)
    if not (where / "adapter_config.json").is_file():
        raise MethodConfigError(f"init_from={folder!r} holds no adapter_config.json; name a folder written by "
                                "`lightning-peft export` (or peft's save_pretrained) from a run of this method.")
    saved, current = PeftConfig.from_pretrained(str(where)).to_dict(), model.peft_config["default"].to_dict()
    differences = [f"{name} {saved.get(name)!r} there, {current.get(name)!r} here" for name in ("peft_type", *settings)
                   if _as_set(saved.get(name)) != _as_set(current.get(name))]
    if differences:
        raise MethodConfigError(f"init_from={folder!r} was trained with other adapter settings ({'; '.join(differences)}); "
                                "set this method's arguments to the exported ones.")
    try:
        result = set_peft_model_state_dict(model, load_peft_weights(str(where), device="cpu"))
    except RuntimeError as error:  # a shape mismatch: another base model
        raise MethodConfigError(f"init_from={folder!r} does not fit this base model ({str(error).splitlines()[-1].strip()}); "
                                "start from an adapter exported on the same base.") from None
    trained = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    missing = sorted(trained & set(result.missing_keys))
    if missing or result.unexpected_keys:
        raise MethodConfigError(f"init_from={folder!r} does not cover this adapter (missing {missing[:3]}, unexpected "
                                f"{list(result.unexpected_keys)[:3]}); start from an adapter exported with the same settings.")


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
