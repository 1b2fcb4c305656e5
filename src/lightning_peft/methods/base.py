"""The contract every method follows: take a `transformers` model, return it adapted plus named parameter groups.

Named groups ("adapter", "head", "prompt", "lowrank", ...) drive per-group learning rates,
schedules, logging keys and adapter-only checkpoints, so a method never hands back a flat list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from torch import nn


class MethodConfigError(ValueError):
    """A method's configuration cannot work with the given model (one sentence: what and how to fix)."""


@dataclass
class Adapted:
    """A model after a method was applied, and the parameters it trains, by group name."""

    model: nn.Module
    groups: dict[str, dict[str, nn.Parameter]] = field(default_factory=dict)

    def trainable_names(self) -> set[str]:
        return {name for group in self.groups.values() for name in group}

    def num_trainable(self) -> int:
        return sum(p.numel() for group in self.groups.values() for p in group.values())


@runtime_checkable
class Method(Protocol):
    """A fine-tuning method: `apply(model, modules_to_save)` -> `Adapted`.

    `modules_to_save` names modules a task added (a classification head) that must be trained
    in full alongside whatever the method trains.
    """

    def apply(self, model: nn.Module, modules_to_save: list[str] | None = None) -> Adapted: ...


def freeze(model: nn.Module) -> None:
    for parameter in model.parameters():
        parameter.requires_grad_(False)


def trainable_groups(model: nn.Module, group_of) -> dict[str, dict[str, nn.Parameter]]:
    """Group every trainable parameter by `group_of(name) -> str`, keeping registration order."""
    groups: dict[str, dict[str, nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            groups.setdefault(group_of(name), {})[name] = parameter
    return groups
