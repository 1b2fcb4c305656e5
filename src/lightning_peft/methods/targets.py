"""Resolve and check `target_modules` against a model before handing them to peft.

peft's own error for a missing target comes from deep inside model injection and does not say
what the model offers; checking first lets us name the layers a user can pick from.
"""

from __future__ import annotations

import re

from torch import nn

from .base import MethodConfigError

ALL_LINEAR = "all-linear"


def linear_layer_names(model: nn.Module) -> list[str]:
    """Short names (last path component) of the model's linear layers, output head excluded."""
    from transformers.pytorch_utils import Conv1D

    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = {
        path.rsplit(".", 1)[-1]
        for path, module in model.named_modules()
        if isinstance(module, (nn.Linear, Conv1D)) and module is not output
    }
    return sorted(names)


def check_targets(model: nn.Module, target_modules: list[str] | str, what: str = "target_modules") -> None:
    """Raise `MethodConfigError` if any requested module name does not exist in `model`."""
    if target_modules == ALL_LINEAR:
        return
    if isinstance(target_modules, str):
        _check_pattern(model, target_modules, what)
        return
    # peft's rule for a list: a name selects every module whose full name is it or ends with "." + it, so
    # a leaf name (`dense`), a dotted tail (`attention.output.dense`) and a full path all select.
    paths = [path for path, _ in model.named_modules()]
    missing = [t for t in target_modules if not any(path == t or path.endswith(f".{t}") for path in paths)]
    if missing:
        raise MethodConfigError(
            f"{what} {missing} not found in {type(model).__name__}; its linear layers are "
            f"{linear_layer_names(model)} (or use '{ALL_LINEAR}')."
        )


def _check_pattern(model: nn.Module, pattern: str, what: str) -> None:
    """peft reads a single string as a regular expression that must match a module's full name (`re.fullmatch`)."""
    try:
        matched = any(re.fullmatch(pattern, path) for path, _ in model.named_modules())
    except re.error as error:
        raise MethodConfigError(f"{what} {pattern!r} is not a valid regular expression ({error}); "
                                "write a list of layer names instead (e.g. [q_proj, v_proj]).") from None
    if not matched:
        raise MethodConfigError(
            f"{what} {pattern!r} is a single string, which peft reads as a regular expression over full module names, "
            f"and it matches none in {type(model).__name__}; write a list ([{pattern}]), a pattern such as "
            f"'.*\\.{pattern}', or '{ALL_LINEAR}'."
        )
