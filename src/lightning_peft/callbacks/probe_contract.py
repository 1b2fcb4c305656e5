"""What the probing callbacks need from a LightningModule: a causal LM, its base, and a tokenizer.

The contract (`ProbedModule`) is met in one of two ways, checked in this order:

1. the module declares it: `probe_model()` returns the causal LM to probe (prompt included, so
   a soft prompt is measured too) and `probe_base()` is a context manager yielding the same model
   with its adaptation turned off, or None when only a second copy could give the base (the
   callbacks then take the model as it is at fit start), and `probe_input_limit()` the longest
   input in tokens the probed model takes (None: no limit; longer probe texts keep their end).
   Every `lightning_peft` module does this through its method's contract;
2. otherwise, for any other LightningModule: the first `peft.PeftModel`, else the first
   `transformers.PreTrainedModel` with an output embedding (an LM head) found in
   `pl_module.modules()`; its base is the peft model with adapters disabled, if it is one.

The tokenizer is the module's `tokenizer` attribute when it has one (`HasTokenizer`), else the
callback's `tokenizer` argument (a model name resolved by `zoo.load_tokenizer`).

Under Lightning's `fast_dev_run` (one batch per loop, to check that a setup runs end to end) the
probing callbacks measure the `SMOKE_*` amounts below instead of their configured ones, and say
so once: their configured base measurement alone can take longer than the whole smoke test.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, ContextManager, Iterator, Protocol, runtime_checkable

from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .. import zoo
from ..evaluation.probes import adapters_disabled

if TYPE_CHECKING:
    import lightning as L

SMOKE_TEXT_CHUNKS = 1  # ForgettingProbe: held-out text chunks measured under fast_dev_run
SMOKE_EXAMPLES = 2  # ForgettingProbe: examples scored per probe task under fast_dev_run
SMOKE_PROMPTS = 2  # ConjugatePromptEval: suite prompts per transform under fast_dev_run


class ProbeContractError(ValueError):
    """The LightningModule holds no causal LM the callback can probe, or no tokenizer is known (one sentence)."""


@runtime_checkable
class ProbedModule(Protocol):
    """Explicit form of the contract: the module names the causal LM to probe and how to see its base."""

    def probe_model(self) -> nn.Module: ...

    def probe_base(self) -> ContextManager[nn.Module | None]: ...

    def probe_input_limit(self) -> int | None: ...


@runtime_checkable
class HasTokenizer(Protocol):
    tokenizer: PreTrainedTokenizerBase


def _is_causal_lm(model: nn.Module) -> bool:
    config = getattr(model, "config", None)
    return model.get_output_embeddings() is not None and not getattr(config, "is_encoder_decoder", False)


def find_causal_lm(pl_module: nn.Module, callback: str) -> nn.Module:
    """The causal LM to probe (a `PeftModel` when the module trains a peft adapter), per the contract above."""
    if isinstance(pl_module, ProbedModule):
        return pl_module.probe_model()
    from peft import PeftModel

    for kind in (PeftModel, PreTrainedModel):
        for module in pl_module.modules():
            if isinstance(module, kind):
                inner = module.get_base_model() if isinstance(module, PeftModel) else module
                if _is_causal_lm(inner):
                    return module
    raise ProbeContractError(
        f"{callback} needs a transformers causal LM (AutoModelForCausalLM, optionally wrapped by peft) inside the "
        f"LightningModule, but {type(pl_module).__name__} holds none; keep the LM as a submodule or define "
        "`probe_model()` returning it (and `probe_base()`)."
    )


@contextlib.contextmanager
def probe_base(pl_module: nn.Module, callback: str) -> Iterator[nn.Module | None]:
    """The base's behaviour for the block (None: only a second copy could give it), per the contract above."""
    if isinstance(pl_module, ProbedModule):
        with pl_module.probe_base() as base:
            yield base
        return
    with adapters_disabled(find_causal_lm(pl_module, callback)) as base:
        yield base


def probe_input_limit(pl_module: nn.Module) -> int | None:
    """The probed model's input limit in tokens, per the contract above (None for modules that do not declare it)."""
    return pl_module.probe_input_limit() if isinstance(pl_module, ProbedModule) else None


def is_smoke_test(trainer: L.Trainer) -> bool:
    """Whether the trainer runs Lightning's `fast_dev_run` (True, or a number of batches)."""
    return bool(trainer.fast_dev_run)


def find_tokenizer(pl_module: nn.Module, name: str | None, callback: str) -> PreTrainedTokenizerBase:
    if isinstance(pl_module, HasTokenizer) and pl_module.tokenizer is not None:
        return pl_module.tokenizer
    if name is None:
        raise ProbeContractError(
            f"{callback} needs a tokenizer: {type(pl_module).__name__} has no `tokenizer` attribute, so pass "
            "`tokenizer=<model name>` to the callback."
        )
    return zoo.load_tokenizer(name)
