"""The contract every method follows, declared once: what modules, callbacks and commands may ask of it.

A method takes a `transformers` model and returns it adapted plus named parameter groups
("adapter", "head", "prompt", "lowrank", ...); the groups drive per-group learning rates,
schedules, logging keys and adapter-only checkpoints, so a method never hands back a flat list.

Around `apply`, the `Method` protocol declares everything else a caller needs, so no caller
branches on method types or probes attributes:

- `bind(tokenizer)`: what must be known before `apply` (the run's tokenizer, for text initialisation);
- `max_input_length`: the longest input, in tokens, the adapted model accepts (None: no limit);
- `probe_model(model)`: the model forgetting probes and generation should see (the adapted model,
  prompt included, usable for a forward pass and `generate`);
- `disabled(model)`: a context in which the same object behaves as the base (no second copy);
- `export(model, folder)` / `load(base, folder)`: the trained part alone, and back onto a base;
- `merge(model)`: a plain `transformers` model with the adaptation folded in.

`capabilities` says which of the last three a method supports; an unsupported one raises
`MethodConfigError` with one sentence (`MethodBase.refuse`). A new method subclasses one of the
family bases (`PeftMethod`, `SoftPromptMethod`, `SelectiveMethod`) or `MethodBase` itself, and the
shared contract suite (`tests/methods/test_contract.py`) checks it without new plumbing tests.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, ContextManager, Iterator, Protocol, runtime_checkable

from torch import nn
from transformers import PreTrainedTokenizerBase


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


@dataclass(frozen=True)
class Capabilities:
    """Which optional operations of the contract a method supports.

    Args:
        export: `export` writes the trained part alone and `load` puts it back onto a base.
        merge: `merge` folds the adaptation into the base's weights (a plain `transformers` model).
        disable: `disabled` turns the adaptation off in place; without it, a caller that needs the
            base (forgetting probes) loads a second copy of it.
    """

    export: bool = True
    merge: bool = False
    disable: bool = True


@runtime_checkable
class Method(Protocol):
    """A fine-tuning method; see the module docstring for what each member promises."""

    capabilities: ClassVar[Capabilities]

    @property
    def max_input_length(self) -> int | None: ...

    def bind(self, tokenizer: PreTrainedTokenizerBase) -> None: ...

    def apply(self, model: nn.Module, modules_to_save: list[str] | None = None) -> Adapted: ...

    def probe_model(self, model: nn.Module) -> nn.Module: ...

    def disabled(self, model: nn.Module) -> ContextManager[nn.Module]: ...

    def export(self, model: nn.Module, folder: Path) -> None: ...

    def load(self, base: nn.Module, folder: str | Path) -> nn.Module: ...

    def merge(self, model: nn.Module) -> nn.Module: ...


class MethodBase(ABC):
    """Defaults of the `Method` contract: nothing to bind, no input limit, and each optional
    operation refused in one sentence (subclasses implement what their `capabilities` declare).

    `modules_to_save` (in `apply`) names modules a task added, such as a classification head, that
    must be trained in full alongside whatever the method trains.
    """

    capabilities: ClassVar[Capabilities] = Capabilities(export=False, merge=False, disable=False)

    @property
    def max_input_length(self) -> int | None:
        return None

    def bind(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Receive the run's tokenizer before `apply` (methods that read text at init keep it)."""

    @abstractmethod
    def apply(self, model: nn.Module, modules_to_save: list[str] | None = None) -> Adapted:
        """Adapt `model` (in place where the method allows) and return it with its named parameter groups."""

    def probe_model(self, model: nn.Module) -> nn.Module:
        """The adapted model itself: every method here returns a model that runs forward and `generate`."""
        return model

    def refuse(self, operation: str, why: str) -> MethodConfigError:
        """The one-sentence error for an operation this method does not support."""
        return MethodConfigError(f"{type(self).__name__} cannot {operation}: {why}")

    @contextlib.contextmanager
    def disabled(self, model: nn.Module) -> Iterator[nn.Module]:
        raise self.refuse("turn its adaptation off in place", "it changes the model's own weights; load the base "
                          "model again to compare against it.")
        yield model  # pragma: no cover - unreachable, makes this a generator

    def export(self, model: nn.Module, folder: Path) -> None:
        raise self.refuse("export an adapter", "it adds no separate weights; save the whole model with "
                          "`lightning-peft merge` instead.")

    def load(self, base: nn.Module, folder: str | Path) -> nn.Module:
        raise self.refuse("load an exported adapter", "it exports none.")

    def merge(self, model: nn.Module) -> nn.Module:
        raise self.refuse("merge into the base", "its trained part is not a weight update; export it with "
                          "`lightning-peft export` and load it onto the base instead.")


class SoftPromptMethod(MethodBase):
    """Family base of the soft-prompt methods (prompt / prefix tuning, DePT, EPT, IAPT): the base stays
    frozen and the method trains vectors the model reads alongside its input. `SoftPromptModule`
    accepts any subclass.

    Methods that start their vectors from text (`init_text`) tokenize it with `tokenizer`: a name
    or folder, a loaded tokenizer, or None for the run's (bound before `apply`).
    """

    tokenizer: str | PreTrainedTokenizerBase | None = None

    def bind(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Text initialisation reads the run's tokenizer unless one was named."""
        if self.tokenizer is None:
            self.tokenizer = tokenizer


class SelectiveMethod(MethodBase):
    """Family base of the selective methods (full fine-tuning, HFT, BitFit, ...): they train the model's
    own weights and add nothing, so there is no adapter to export or to turn off, and "merging"
    returns the fine-tuned model itself. `SelectiveModule` accepts any subclass."""

    capabilities: ClassVar[Capabilities] = Capabilities(export=False, merge=True, disable=False)

    def merge(self, model: nn.Module) -> nn.Module:
        return model


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
