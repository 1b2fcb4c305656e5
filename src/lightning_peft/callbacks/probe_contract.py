"""What the probing callbacks need from a LightningModule: a `transformers` causal LM and its tokenizer.

The contract (`ProbedModule`) is met in one of two ways, checked in this order:

1. the module defines `probe_model()` returning the causal LM to probe (explicit; use it when a
   module holds several models);
2. otherwise the first `peft.PeftModel`, else the first `transformers.PreTrainedModel` with an
   output embedding (an LM head) found in `pl_module.modules()`.

The tokenizer is the module's `tokenizer` attribute when it has one (`HasTokenizer`), else the
callback's `tokenizer` argument (a model name resolved by `zoo.load_tokenizer`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .. import zoo


class ProbeContractError(ValueError):
    """The LightningModule holds no causal LM the callback can probe, or no tokenizer is known (one sentence)."""


@runtime_checkable
class ProbedModule(Protocol):
    """Optional, explicit form of the contract: the module names the causal LM to probe."""

    def probe_model(self) -> nn.Module: ...


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
        "`probe_model()` returning it."
    )


def find_tokenizer(pl_module: nn.Module, name: str | None, callback: str) -> PreTrainedTokenizerBase:
    if isinstance(pl_module, HasTokenizer) and pl_module.tokenizer is not None:
        return pl_module.tokenizer
    if name is None:
        raise ProbeContractError(
            f"{callback} needs a tokenizer: {type(pl_module).__name__} has no `tokenizer` attribute, so pass "
            "`tokenizer=<model name>` to the callback."
        )
    return zoo.load_tokenizer(name)
