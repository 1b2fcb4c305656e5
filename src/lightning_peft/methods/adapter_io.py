"""Bottleneck adapters on disk: one folder per trained adapter, safetensors + JSON, checked before loading.

A folder holds ``adapter_model.safetensors`` (the trained adapter's parameters and any task head,
under their names in the adapted model, the adapter under the role "task") and
``bottleneck_adapter.json`` (`AdapterSpec`: placement, width, non-linearity, and the base it was
trained on: model type, hidden size and `adapter_layers.base_signature`). A task adapter trained on
a frozen language adapter (MAD-X) also holds that adapter as a folder of the same kind,
``language_adapter/``, so the export is complete by itself.

Every reader checks the folder against the model before copying a value, so a mismatch (another
base, another placement or width, a peft folder) is one sentence, never a size error from torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..atomic import write_file_atomically
from .adapter_layers import SLOT, base_signature, model_type
from .base import MethodConfigError
from .spec_file import read_spec_file

CONFIG_NAME = "bottleneck_adapter.json"
WEIGHTS_NAME = "adapter_model.safetensors"
LANGUAGE_FOLDER = "language_adapter"
FORMAT = "lightning-peft-bottleneck"
PEFT_CONFIG_NAME = "adapter_config.json"
TRAINED, LANGUAGE = "task", "language"  # roles in each stack: the adapter a run trains, the frozen one under it


class AdapterLoadError(MethodConfigError):
    """An exported bottleneck adapter does not fit the model or method it is being loaded into."""


@dataclass
class AdapterSpec:
    """What an exported bottleneck adapter is, and which base it was trained on.

    Args:
        placement: "houlsby" or "pfeiffer".
        reduction_factor: The factor it was built with (hidden_size // reduction_factor = width).
        non_linearity: The activation between the projections.
        width: The bottleneck's inner width.
        hidden_size: The base's hidden size.
        base_model_type: The base's `config.model_type`.
        base_signature: `adapter_layers.base_signature` of the base.
        base_model_name_or_path: The base's name, for messages only.
        modules_to_save: Task modules (heads) trained in full and saved with the adapter.
        language_adapter: Whether the folder holds a frozen language adapter it was stacked on.
    """

    placement: str
    reduction_factor: float
    non_linearity: str
    width: int
    hidden_size: int
    base_model_type: str
    base_signature: str
    base_model_name_or_path: Optional[str] = None
    modules_to_save: list[str] = field(default_factory=list)
    language_adapter: bool = False
    format: str = FORMAT


def read_spec(folder: str | Path, what: str) -> AdapterSpec:
    """The spec of an exported bottleneck adapter; `what` names the setting that pointed here (for messages)."""
    folder = Path(folder)
    if (folder / PEFT_CONFIG_NAME).is_file():
        raise AdapterLoadError(f"{what} {folder} is a peft adapter (LoRA, IA3, prompts), not a bottleneck adapter; "
                               "point it at a folder exported from a BottleneckAdapter run.")
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise AdapterLoadError(f"{what} {folder} holds no {CONFIG_NAME}; point it at a folder exported from a "
                               "BottleneckAdapter run (`lightning-peft export`).")
    return read_spec_file(path, AdapterSpec, FORMAT, AdapterLoadError, "bottleneck adapter", "the adapter")


def check_base(spec: AdapterSpec, model: nn.Module, folder: Path, what: str) -> None:
    """Refuse an adapter trained on another base (model type, hidden size, or the weights it sits on)."""
    kind, signature = model_type(model), base_signature(model)
    if spec.base_model_type != kind or spec.hidden_size != model.config.hidden_size or spec.base_signature != signature:
        raise AdapterLoadError(
            f"{what} {folder} was trained on another base ({spec.base_model_name_or_path!r}, {spec.base_model_type}, "
            f"hidden size {spec.hidden_size}, signature {spec.base_signature}) than this {kind} model "
            f"(hidden size {model.config.hidden_size}, signature {signature}); use an adapter trained on this base.")


def copy_into(model: nn.Module, saved: dict[str, torch.Tensor], expected: set[str], folder: Path, what: str) -> None:
    """Copy `saved` into the parameters named `expected` (exactly those), after checking names and shapes."""
    parameters = dict(model.named_parameters())
    missing, unexpected = sorted(expected - saved.keys()), sorted(saved.keys() - expected)
    if missing or unexpected:
        raise AdapterLoadError(
            f"{what} {folder} holds adapters at other places than this method inserts (missing {missing[:2]}, "
            f"unexpected {unexpected[:2]}); use the placement and heads it was trained with (see its {CONFIG_NAME}).")
    wrong = [f"{n} {tuple(saved[n].shape)} vs {tuple(parameters[n].shape)}" for n in sorted(expected)
             if saved[n].shape != parameters[n].shape]
    if wrong:
        raise AdapterLoadError(f"{what} {folder} has other shapes than this method builds ({wrong[0]}); use the "
                               f"reduction_factor it was trained with (see its {CONFIG_NAME}).")
    with torch.no_grad():
        for name in expected:
            parameters[name].copy_(saved[name])


def renamed(name: str, role: str, to: str) -> str:
    """A parameter name with the adapter of `role` in its stack renamed to `to` (other names unchanged)."""
    return name.replace(f".{SLOT}.{role}.", f".{SLOT}.{to}.", 1)


def read_weights(folder: Path, role: str = TRAINED, adapters_only: bool = False) -> dict[str, torch.Tensor]:
    """The folder's tensors, its trained adapter renamed to `role`; with `adapters_only`, without heads."""
    tensors = load_file(str(folder / WEIGHTS_NAME))
    return {renamed(name, TRAINED, role): t for name, t in tensors.items() if not adapters_only or f".{SLOT}.{TRAINED}." in name}


def write_adapter(folder: Path, spec: AdapterSpec, tensors: dict[str, torch.Tensor]) -> None:
    """Write one adapter folder (weights + spec); the caller writes `LANGUAGE_FOLDER` inside for a stack."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    write_file_atomically(folder / WEIGHTS_NAME, lambda p: save_file(state, str(p), metadata={"format": "pt"}))
    write_file_atomically(folder / CONFIG_NAME, lambda p: p.write_text(json.dumps(asdict(spec), indent=2) + "\n"))
