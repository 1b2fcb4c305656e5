"""Rebuild the LightningModule a `lightning-peft fit` checkpoint came from, trained weights loaded.

The one place the commands (`export`, `merge`, `evaluate`) turn a checkpoint back into a module.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from ..checkpoint import HPARAMS_KEY, CheckpointError, read_checkpoint, saved_module_class
from ..methods import Capabilities, MethodBase
from ..modules import FineTuneModule
from .refuse import refuse

# What each capability lets a command do, for the refusal sentence.
_NEEDED_FOR = {"export": ("export an adapter", "it has no separate adapter; use `lightning-peft merge` to save the "
                                               "whole fine-tuned model"),
               "merge": ("merge into its base", "its trained part is no weight update; use `lightning-peft export` "
                                                "and load the export onto the base")}


def _saved_method_class(ckpt: dict) -> type | None:
    """The method class recorded in the checkpoint's config, when it is already imported (none is imported here)."""
    method = (ckpt.get(HPARAMS_KEY) or {}).get("method")
    class_path = method.get("class_path") if isinstance(method, dict) else None
    if not class_path:
        return None
    module_name, _, name = str(class_path).rpartition(".")
    found = vars(sys.modules[module_name]).get(name) if module_name in sys.modules else None
    return found if isinstance(found, type) and issubclass(found, MethodBase) else None


def _supports(capabilities: Capabilities, operation: str) -> bool:
    return {"export": capabilities.export, "merge": capabilities.merge}[operation]


def module_from_checkpoint(ckpt_path: str, require: str | None = None) -> FineTuneModule:
    """The module of `ckpt_path` with its trained weights loaded, on the CPU.

    Args:
        ckpt_path: A checkpoint written by `lightning-peft fit`.
        require: "export" or "merge": refuse, before any weights load, a checkpoint whose method
            declares it cannot do that (`Method.capabilities`).

    Exits (`refuse`: status 2) with one `error: ...` sentence for a missing, unreadable or unsuitable checkpoint.
    """
    if not Path(ckpt_path).is_file():
        what = "is a folder" if Path(ckpt_path).is_dir() else "does not exist"
        refuse(f"--ckpt_path {ckpt_path} {what}; point it at a .ckpt file written by `lightning-peft fit`.")
    try:
        ckpt = read_checkpoint(ckpt_path)
        module_class = saved_module_class(ckpt, FineTuneModule)
        method_class = _saved_method_class(ckpt)
        capabilities: Capabilities | None = method_class.capabilities if method_class is not None else None
        if require is not None and capabilities is not None and not _supports(capabilities, require):
            verb, why = _NEEDED_FOR[require]
            raise CheckpointError(f"This checkpoint's method, {method_class.__name__}, cannot {verb}: {why}.")
        with warnings.catch_warnings():  # the frozen base is absent from the checkpoint by design
            warnings.filterwarnings("ignore", message="Found keys that are in the model state dict but not in")
            return module_class.load_from_checkpoint(ckpt_path, map_location="cpu", strict=False, weights_only=True)
    except CheckpointError as error:
        refuse(str(error))
