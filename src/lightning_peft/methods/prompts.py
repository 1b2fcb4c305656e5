"""Prompt tuning and prefix tuning through peft (never re-implemented here).

- Prompt tuning: Lester, Al-Rfou, Constant 2021, "The Power of Scale for Parameter-Efficient Prompt
  Tuning", arXiv:2104.08691. m trained vectors are prepended to the input embeddings of a frozen
  model (the encoder's, for T5); 100 tokens in the paper, initialised from vocabulary or text.
- Prefix tuning: Li & Liang 2021, "Prefix-Tuning: Optimizing Continuous Prompts for Generation",
  arXiv:2101.00190. Trained key/value prefixes at every attention layer, optionally produced by
  an MLP (reparameterisation) during training.

Both return a `peft.PeftModel` (so `save_pretrained` / `PeftModel.from_pretrained` work) with the
groups "prompt" (the prompt encoder) and "head" (`modules_to_save`, e.g. a new classifier).

peft's prompt tuning ignores ``position_ids`` (with a warning) and lets the model count positions
from the first prompt vector, so a left-padded row gets other positions than the same row
unpadded, and a decoder-only sequence classifier fed ``inputs_embeds`` pools the last column even
when it is padding. `fix_prompt_positions` (installed by `apply`, and by
`lightning_peft.methods.soft_prompt_io.load_soft_prompt` after reloading) corrects both with two
forward pre-hooks: the caller's position ids reach the base shifted past the prompt (or, without
them, are counted from the attention mask, so real tokens continue right after the prompt), and
sequence classifiers get their padding moved to the left.
"""

from __future__ import annotations

import contextlib
import inspect
from abc import abstractmethod
from typing import Iterator, Literal

import torch
from peft import (
    PeftModel,
    PrefixTuningConfig,
    PromptLearningConfig,
    PromptTuningConfig,
    TaskType,
    get_peft_model,
    initialize_kv_prefix_from_past_key_values,
)
from torch import nn
from transformers import PreTrainedTokenizerBase

from .base import Adapted, MethodConfigError, SoftPromptMethod, trainable_groups
from .peft_backed import PeftBacked, peft_task_type
from .prompt_inputs import (
    is_encoder_decoder,
    left_align_rows,
    pools_last_token,
    positions_from_mask,
    shift_positions,
    text_token_ids,
)
from .targets import check_targets

HEAD_MARKER = ".modules_to_save."
_CARRIED_POSITIONS = "lightning_peft_position_ids"  # peft forwards unknown keywords to the base model untouched


def _group_of(name: str) -> str:
    return "head" if HEAD_MARKER in name else "prompt"


def task_type_of(model: nn.Module) -> TaskType:
    """peft's task type for a `transformers` model; prompt methods need one (see `peft_task_type`)."""
    task_type = peft_task_type(model)
    if task_type in (None, TaskType.TOKEN_CLS):  # a token classifier's logits would gain a row per virtual token
        raise MethodConfigError(
            f"peft's prompt methods support causal LMs, seq2seq LMs and sequence classifiers, not {type(model).__name__}; "
            "load the backbone with AutoModelForCausalLM, AutoModelForSeq2SeqLM or AutoModelForSequenceClassification."
        )
    return task_type


def takes_past_key_values(model: nn.Module) -> bool:
    """Whether `model` or its backbone takes ``past_key_values`` by that name, which peft's prefix tuning checks
    before running a sequence classifier (peft 0.21)."""
    return any("past_key_values" in inspect.signature(part.forward).parameters for part in (model, model.base_model))


@contextlib.contextmanager
def _prompt_off(model: PeftModel) -> Iterator[nn.Module]:
    """`model` without its prompt, in place. peft's `disable_adapter` also swaps `prepare_inputs_for_generation`,
    which a sequence classifier lacks (peft 0.21: AttributeError); for one, only the forward is swapped, as
    peft does it: the base's own forward, past the prompt."""
    if peft_task_type(model.get_base_model()) != TaskType.SEQ_CLS:
        with model.disable_adapter():
            yield model
        return
    prompted = model.forward
    model.forward = model.base_model.forward
    try:
        yield model
    finally:
        model.forward = prompted


def _carry_position_ids(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Before peft's prompt tuning, which would drop ``position_ids``: pass them under another name to the base."""
    if args:  # name positional arguments (input_ids, attention_mask, ...) so the rows can be realigned
        bound = inspect.signature(module.forward).bind_partial(*args, **kwargs).arguments
        args, kwargs = (), {**bound.pop("kwargs", {}), **bound}
    position_ids = kwargs.pop("position_ids", None)
    mask = kwargs.get("attention_mask")
    if mask is not None and pools_last_token(module.get_base_model()):
        names = [n for n in ("input_ids", "inputs_embeds") if kwargs.get(n) is not None]
        aligned = left_align_rows(mask, mask, *(kwargs[n] for n in names))
        kwargs["attention_mask"] = aligned[0]
        kwargs.update(zip(names, aligned[1:]))
    elif position_ids is not None:
        kwargs[_CARRIED_POSITIONS] = position_ids
    return args, kwargs


def _positions_for_base(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Before the base model: the prompt (or prefix) at positions 0..k-1, the input's right after it."""
    carried = kwargs.pop(_CARRIED_POSITIONS, None)
    mask = kwargs.get("attention_mask")
    inputs = kwargs.get("inputs_embeds") if kwargs.get("inputs_embeds") is not None else kwargs.get("input_ids")
    if kwargs.get("position_ids") is not None or inputs is None:
        return args, kwargs
    if carried is not None:
        kwargs["position_ids"] = shift_positions(carried, inputs.shape[1] - carried.shape[1])
    elif mask is not None and mask.dim() == 2 and not bool(mask.bool().all()):
        kwargs["position_ids"] = positions_from_mask(mask)[:, -inputs.shape[1] :]
    return args, kwargs


def fix_prompt_positions(model: PeftModel) -> PeftModel:
    """Install the two pre-hooks described in the module docstring on a prompt-learning `PeftModel` (idempotent)."""
    config = model.active_peft_config
    base = model.get_base_model()
    if is_encoder_decoder(base) or getattr(model, "_lightning_peft_positions_fixed", False):
        return model
    if config.peft_type.value == "PROMPT_TUNING":
        model.register_forward_pre_hook(_carry_position_ids, with_kwargs=True)
    base.register_forward_pre_hook(_positions_for_base, with_kwargs=True)
    model._lightning_peft_positions_fixed = True
    return model


def _check_init(method: str, init: str, init_text: str | None, choices: tuple[str, ...]) -> None:
    """One sentence for an unknown `init`, or for `init_text` given without ``init="text"`` (or missing with it)."""
    if init not in choices:
        raise MethodConfigError(f"{method} init={init!r} is unknown; use one of {', '.join(map(repr, choices))}.")
    if (init == "text") != bool(init_text):
        raise MethodConfigError(f"{method} needs init_text exactly when init='text'; set both, or neither.")


class _PeftPrompt(PeftBacked, SoftPromptMethod):
    """Shared mechanics: choose the task type, wrap with peft, fix positions, group parameters."""

    def __init__(self, num_virtual_tokens: int, modules_to_save: list[str] | None) -> None:
        if num_virtual_tokens < 1:
            raise MethodConfigError(f"num_virtual_tokens={num_virtual_tokens} must be a positive integer (paper: 100).")
        self.num_virtual_tokens = num_virtual_tokens
        self.modules_to_save = list(modules_to_save or [])

    @abstractmethod
    def peft_config(self, model: nn.Module, task_type: TaskType, modules_to_save: list[str]) -> PromptLearningConfig:
        """The peft config of this prompt method for `model`."""

    def apply(self, model: nn.Module, modules_to_save: list[str] | None = None) -> Adapted:
        """Wrap `model` (frozen) with a trainable prompt; returns the `PeftModel` and groups "prompt" (+ "head")."""
        task_type = task_type_of(model)
        save = sorted(set(self.modules_to_save) | set(modules_to_save or []))
        check_targets(model, save, what="modules_to_save") if save else None
        peft_model = get_peft_model(model, self.peft_config(model, task_type, save))
        fix_prompt_positions(peft_model)
        return Adapted(peft_model, trainable_groups(peft_model, _group_of))

    def load(self, base: nn.Module, folder) -> nn.Module:
        """The exported prompt on `base`, with the same position fix as after `apply`."""
        return fix_prompt_positions(super().load(base, folder))

    def disabled(self, model: nn.Module) -> contextlib.AbstractContextManager[nn.Module]:
        return _prompt_off(model)


class PromptTuning(_PeftPrompt):
    """Prompt tuning (Lester et al. 2021, arXiv:2104.08691) through peft's `PromptTuningConfig`.

    Example::

        from transformers import AutoModelForCausalLM
        from lightning_peft.methods.prompts import PromptTuning
        adapted = PromptTuning(num_virtual_tokens=20, init="text", init_text="Classify the topic:").apply(
            AutoModelForCausalLM.from_pretrained(path))
        adapted.groups["prompt"]  # {"prompt_encoder.default.embedding.weight": parameter [20, d]}

    Args:
        num_virtual_tokens: Prompt length m (paper: 100).
        init: "random" (normal init), "vocab" (embeddings of randomly sampled vocabulary tokens, the
            paper's choice) or "text" (the embeddings of `init_text`, tiled / truncated to m tokens).
        init_text: Text for ``init="text"``, e.g. a task instruction or the label words.
        tokenizer: Tokenizer for ``init="text"``: a name or folder (zoo short names work) or a loaded
            tokenizer saved in a folder; by default the model's own folder (``model.name_or_path``).
        modules_to_save: Modules trained in full besides the prompt (e.g. a new head).
    """

    def __init__(
        self,
        num_virtual_tokens: int = 100,
        init: Literal["random", "vocab", "text"] = "random",
        init_text: str | None = None,
        tokenizer: str | PreTrainedTokenizerBase | None = None,
        modules_to_save: list[str] | None = None,
    ) -> None:
        super().__init__(num_virtual_tokens, modules_to_save)
        _check_init(type(self).__name__, init, init_text, ("random", "vocab", "text"))
        self.init, self.init_text, self.tokenizer = init, init_text, tokenizer

    def _tokenizer_path(self, model: nn.Module) -> str:
        tokenizer = self.tokenizer
        if isinstance(tokenizer, str):
            from .. import zoo

            tokenizer = zoo.load_tokenizer(tokenizer)
        path = tokenizer.name_or_path if tokenizer is not None else getattr(model, "name_or_path", "")
        if not path:
            raise MethodConfigError(
                "PromptTuning init='text' needs the tokenizer's name or folder; pass tokenizer='<name or path>'."
            )
        return path

    def peft_config(self, model, task_type, modules_to_save) -> PromptTuningConfig:
        text = self.init == "text"
        return PromptTuningConfig(
            task_type=task_type,
            num_virtual_tokens=self.num_virtual_tokens,
            prompt_tuning_init={"random": "RANDOM", "vocab": "SAMPLE_VOCAB", "text": "TEXT"}[self.init],
            prompt_tuning_init_text=self.init_text if text else None,
            tokenizer_name_or_path=self._tokenizer_path(model) if text else None,
            modules_to_save=modules_to_save or None,
            # peft allocates 2m rows for seq2seq models but its forward reads only the encoder's m
            num_transformer_submodules=1,
        )


class PrefixTuning(_PeftPrompt):
    """Prefix tuning (Li & Liang 2021, arXiv:2101.00190) through peft's `PrefixTuningConfig`.

    Works with the installed transformers' cache API on Llama, GPT-2 and T5 (tested forward and
    backward). peft refuses gradient checkpointing with prefix tuning (the prefix is passed as a
    KV cache); `apply` says so in one sentence when the model has it on.

    ``init="text"`` starts the prefixes as the frozen model's own keys and values of real words (the
    paper's Section 7.2: "initializing the prefix with activations of real words" beats random
    initialisation clearly in low-data settings): `init_text` is tokenized, tiled / truncated to
    `num_virtual_tokens`, run through the base once, and peft's `initialize_kv_prefix_from_past_key_values`
    loads that cache as the prefix. It needs ``prefix_projection=False`` (an MLP's output cannot be set)
    and a decoder-only model.

    Args:
        num_virtual_tokens: Prefix length per layer (paper: 10 for table-to-text, 100-200 for summarisation).
        prefix_projection: Produce the prefixes with an MLP (the paper's reparameterisation, which
            trains more stably); without it the key/value prefixes are trained directly.
        encoder_hidden_size: Width of that MLP's hidden layer (paper: 512).
        init: "random" (peft's initialisation) or "text" (the activations of `init_text`, above).
        init_text: Text for ``init="text"``, e.g. a task instruction or the label words.
        tokenizer: Tokenizer for ``init="text"``: a name or folder (zoo short names work) or a loaded
            tokenizer; by default the run's (bound before `apply`) or the model's own folder.
        modules_to_save: Modules trained in full besides the prefix (e.g. a new head).
    """

    def __init__(
        self,
        num_virtual_tokens: int = 10,
        prefix_projection: bool = False,
        encoder_hidden_size: int = 512,
        init: Literal["random", "text"] = "random",
        init_text: str | None = None,
        tokenizer: str | PreTrainedTokenizerBase | None = None,
        modules_to_save: list[str] | None = None,
    ) -> None:
        super().__init__(num_virtual_tokens, modules_to_save)
        if encoder_hidden_size < 1:
            raise MethodConfigError(f"encoder_hidden_size={encoder_hidden_size} must be a positive integer (paper: 512).")
        _check_init(type(self).__name__, init, init_text, ("random", "text"))
        if init == "text" and prefix_projection:
            raise MethodConfigError(
                "PrefixTuning init='text' sets the key/value prefixes themselves, which prefix_projection replaces "
                "with an MLP's output; set prefix_projection: false."
            )
        self.prefix_projection, self.encoder_hidden_size = prefix_projection, encoder_hidden_size
        self.init, self.init_text, self.tokenizer = init, init_text, tokenizer

    def apply(self, model: nn.Module, modules_to_save: list[str] | None = None) -> Adapted:
        checkpointing = getattr(model, "is_activation_checkpointing", None)
        if checkpointing is None:
            checkpointing = getattr(model, "is_gradient_checkpointing", False)
        if checkpointing:
            raise MethodConfigError(
                "Prefix tuning does not work with gradient checkpointing in peft (the prefix travels as a KV cache); "
                "turn gradient checkpointing off, or use prompt tuning / DePT, which support it."
            )
        if task_type_of(model) == TaskType.SEQ_CLS and not takes_past_key_values(model):
            raise MethodConfigError(
                f"peft's prefix tuning hands a sequence classifier its prefixes as past_key_values, which "
                f"{type(model).__name__} does not take (transformers 5 names it `cache`); use prompt tuning, DePT or "
                "LoRA for this model."
            )
        if self.init == "text" and is_encoder_decoder(model):
            raise MethodConfigError(
                f"PrefixTuning init='text' runs the text through a decoder-only model, not {type(model).__name__}; "
                "use init: random for encoder-decoder models."
            )
        adapted = super().apply(model, modules_to_save)
        if self.init == "text":
            self._start_from_text(adapted.model)
        return adapted

    @torch.no_grad()
    def _start_from_text(self, model: PeftModel) -> None:
        base = model.get_base_model()
        ids = text_token_ids(base, self.num_virtual_tokens, self.init_text, self.tokenizer, "PrefixTuning")
        device = next(base.parameters()).device
        cache = base(input_ids=torch.tensor([ids], device=device), use_cache=True).past_key_values
        initialize_kv_prefix_from_past_key_values(model, past_key_values=cache)

    def peft_config(self, model, task_type, modules_to_save) -> PrefixTuningConfig:
        return PrefixTuningConfig(
            task_type=task_type,
            num_virtual_tokens=self.num_virtual_tokens,
            prefix_projection=self.prefix_projection,
            encoder_hidden_size=self.encoder_hidden_size,
            modules_to_save=modules_to_save or None,
        )
