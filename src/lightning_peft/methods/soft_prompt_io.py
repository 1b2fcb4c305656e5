"""Export a trained soft prompt without the base model, and put it back onto a base.

Two formats, chosen by what the model is:

- peft models (prompt tuning, prefix tuning): peft's own folder (``adapter_config.json`` +
  ``adapter_model.safetensors``), written by the method's `export` (`PeftBacked`), so
  `peft.PeftModel.from_pretrained` reads it anywhere.
- our `PromptedModel` wrappers (DePT, EPT, IAPT, ...): ``adapter_model.safetensors`` with the
  wrapper's `PromptedModel.soft_prompt_state` and ``soft_prompt_config.json`` with the method's
  ``class_path`` and ``init_args`` (the wrapper's ``method_config``) and the base model's
  ``name_or_path`` and ``model_type``. Any method works whose `apply(model)` returns a
  `PromptedModel` with ``method_config`` set, and whose ``init_args`` rebuild the same shapes.

`load_soft_prompt` reads either format and returns the adapted model in eval mode;
`PromptedMethod` is the `Method` contract's export / load / disable for our wrappers.
"""

from __future__ import annotations

import contextlib
import importlib
import json
from pathlib import Path
from typing import Any, ClassVar, Iterator

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from torch import nn

from ..atomic import write_file_atomically
from .base import Capabilities, MethodConfigError, SoftPromptMethod
from .prompt_inputs import PromptedModel
from .prompts import fix_prompt_positions

CONFIG_NAME = "soft_prompt_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PEFT_CONFIG_NAME = "adapter_config.json"
FORMAT = "lightning-peft-soft-prompt"
TRUSTED_PREFIX = "lightning_peft."  # class paths outside the package are imported only when the caller allows it


class SoftPromptLoadError(MethodConfigError):
    """A saved soft prompt does not fit the base model or method it is being loaded onto."""


def save_soft_prompt(model: nn.Module, folder: str | Path) -> Path:
    """Write the trained part of a `PromptedModel` (built by a method's `apply`) to `folder`.

    peft's prompt methods export through `PeftBacked.export` (peft format) instead.
    """
    folder = Path(folder)
    if not isinstance(model, PromptedModel) or not model.method_config:
        raise MethodConfigError(
            f"save_soft_prompt exports soft-prompt wrappers built by a method's apply() (DePT, EPT, IAPT); "
            f"got {type(model).__name__} without a method_config (peft models: use the method's export)."
        )
    folder.mkdir(parents=True, exist_ok=True)
    state = {name: t.detach().cpu().contiguous() for name, t in model.soft_prompt_state().items()}
    base_config = getattr(model.base, "config", None)
    config = {
        "format": FORMAT,
        **model.method_config,
        "base_model_name_or_path": getattr(model.base, "name_or_path", None),
        "base_model_type": getattr(base_config, "model_type", None),
    }
    write_file_atomically(folder / WEIGHTS_NAME, lambda p: save_file(state, str(p), metadata={"format": "pt"}))
    write_file_atomically(folder / CONFIG_NAME, lambda p: p.write_text(json.dumps(config, indent=2) + "\n"))
    return folder


def read_soft_prompt_config(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise SoftPromptLoadError(
            f"{folder} holds neither {CONFIG_NAME} nor {PEFT_CONFIG_NAME}; pass a folder written by save_soft_prompt."
        )
    config = json.loads(path.read_text())
    if config.get("format") != FORMAT or "class_path" not in config:
        raise SoftPromptLoadError(f"{path} is not a lightning-peft soft-prompt config (no format/class_path).")
    return config


def _method_class(class_path: str, allow_any_class: bool) -> type:
    if not class_path.startswith(TRUSTED_PREFIX) and not allow_any_class:
        raise SoftPromptLoadError(
            f"The export names method {class_path!r} outside lightning_peft; pass allow_any_class=True if you trust it."
        )
    module_name, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        raise SoftPromptLoadError(f"The export's method {class_path!r} cannot be imported here.") from None


def _check_state(saved: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], folder: Path) -> None:
    missing, unexpected = sorted(expected.keys() - saved.keys()), sorted(saved.keys() - expected.keys())
    if missing or unexpected:
        raise SoftPromptLoadError(
            f"The weights in {folder} do not match the rebuilt method (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}); the export was made with another method or version."
        )
    wrong = [f"{n} {tuple(saved[n].shape)} vs {tuple(expected[n].shape)}" for n in expected if saved[n].shape != expected[n].shape]
    if wrong:
        raise SoftPromptLoadError(
            f"The weights in {folder} have other shapes than this base model needs ({wrong[0]}); "
            "load them onto the base model they were trained with."
        )


class PromptedMethod(SoftPromptMethod):
    """Base of soft-prompt methods whose `apply` returns a `PromptedModel` (DePT, EPT, IAPT).

    The wrapper holds the untouched base, so turning the method off is calling the base; export
    and loading use this module's format.
    """

    capabilities: ClassVar[Capabilities] = Capabilities(export=True, merge=False, disable=True)

    @contextlib.contextmanager
    def disabled(self, model: nn.Module) -> Iterator[nn.Module]:
        yield model.base

    def export(self, model: nn.Module, folder: Path) -> None:
        save_soft_prompt(model, folder)

    def load(self, base: nn.Module, folder: str | Path) -> nn.Module:
        return load_soft_prompt(base, folder)


def exported_method(folder: str | Path, allow_any_class: bool = False) -> SoftPromptMethod:
    """The method an export of ours was made with, rebuilt from its `soft_prompt_config.json`."""
    config = read_soft_prompt_config(folder)
    return _method_class(config["class_path"], allow_any_class)(**config.get("init_args", {}))


def load_soft_prompt(base_model: nn.Module, folder: str | Path, allow_any_class: bool = False) -> nn.Module:
    """Rebuild the exported method on `base_model`, load its weights, and return the model in eval mode.

    Args:
        base_model: The plain `transformers` model the prompt was trained on (it becomes the
            returned model's base).
        folder: A folder written by `save_soft_prompt` (either format).
        allow_any_class: Also import a method class from outside ``lightning_peft`` named in the export.
    """
    folder = Path(folder)
    if (folder / PEFT_CONFIG_NAME).is_file():
        model = PeftModel.from_pretrained(base_model, str(folder))
        if model.active_peft_config.is_prompt_learning:
            fix_prompt_positions(model)
        return model.eval()
    config = read_soft_prompt_config(folder)
    theirs, ours = config.get("base_model_type"), getattr(getattr(base_model, "config", None), "model_type", None)
    if theirs and ours and theirs != ours:
        raise SoftPromptLoadError(
            f"The soft prompt in {folder} was trained on a {theirs} model ({config.get('base_model_name_or_path')}), "
            f"not on this {ours} model; load it onto the base it was trained with."
        )
    method = exported_method(folder, allow_any_class)
    model = method.apply(base_model).model
    saved = load_file(str(folder / WEIGHTS_NAME))
    _check_state(saved, model.soft_prompt_state(), folder)
    with torch.no_grad():
        parameters = dict(model.named_parameters(remove_duplicate=False))
        for name, tensor in saved.items():
            parameters[name].copy_(tensor)
    return model.eval()
