"""Load something trained for use: an exported adapter folder, a merged folder, or a plain model.

The folder's `lightning_peft.json` (`card.RunCard`) names the base, the task and the input
format, so nothing else is needed: an adapter is put back onto its base (which must have the
fingerprint it was trained on), a merged folder loads as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, PreTrainedTokenizerBase

from .. import checkpoint, zoo
from .. import quantization as quant
from ..card import CARD_NAME, CardError, RunCard
from ..data.formats import InputFormat
from ..methods import MethodBase
from ..methods.soft_prompt_io import load_soft_prompt
from ..tasks import Task


@dataclass
class Runnable:
    """A model ready to apply, and what says how to feed it.

    Args:
        model: The model in eval mode (adapter or prompt included); runs forward and `generate`.
        tokenizer: Its tokenizer.
        task: The trained task (bound to the tokenizer and labels), or None for a plain model.
        input_format: How training wrote inputs, or None (then prompts are used as given).
        encoder_decoder: `generate` returns decoder tokens only (T5-style), not the input and what follows.
    """

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    task: Task | None = None
    input_format: InputFormat | None = None
    encoder_decoder: bool = False


def _class_paths(spec: Any) -> list[str]:
    if isinstance(spec, dict):
        own = [str(spec["class_path"])] if "class_path" in spec else []
        return own + [p for value in spec.values() for p in _class_paths(value)]
    if isinstance(spec, list):
        return [p for value in spec for p in _class_paths(value)]
    return []


def _built_from_card(spec: dict[str, Any], kind: type, what: str) -> Any:
    """The object a card's `{"class_path", "init_args"}` names, built by jsonargparse; only this package's classes."""
    from jsonargparse import ArgumentParser

    foreign = [path for path in _class_paths(spec) if not path.startswith("lightning_peft.")]
    if foreign:
        raise CardError(f"The card names {foreign[0]!r}, which is not a lightning_peft class; only this package's "
                        f"{what} are built from a card (nothing else is imported).")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--built", type=kind)
    return parser.instantiate_classes(parser.parse_object({"built": spec})).built


def task_from_spec(spec: dict[str, Any], tokenizer: PreTrainedTokenizerBase, label_names: list[str] | None) -> Task:
    """The task a card records (`{"class_path", "init_args"}`), built and bound; only lightning_peft's tasks."""
    task = _built_from_card(spec, Task, "tasks")
    task.bind(tokenizer, label_names)
    return task


def method_loader(spec: dict[str, Any]) -> MethodBase:
    """The method class a card records, built with its defaults: its `load` reads the exported settings from
    the folder itself (`Method.load`), so the training run's own arguments (paths on another machine, such
    as a MAD-X language adapter's source folder) are not needed and not trusted."""
    return _built_from_card({"class_path": spec["class_path"]}, MethodBase, "methods")


def _dtype(device: torch.device, dtype: str) -> torch.dtype:
    if dtype == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def resolve_device(device: str) -> torch.device:
    """ "auto": the GPU when there is one, else the CPU; otherwise the named device, which must exist."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise CardError(f"--device {device!r} is not a device; use auto, cpu, cuda or cuda:N.") from None
    if chosen.type == "cuda" and (not torch.cuda.is_available() or (chosen.index or 0) >= torch.cuda.device_count()):
        raise CardError(f"--device {device} is not on this machine ({torch.cuda.device_count()} CUDA devices); "
                        "use --device auto or cpu.")
    return chosen


def ready(model: nn.Module, device: torch.device, dtype: str) -> nn.Module:
    """`model` on `device` in the dtype `dtype` names ("auto": bfloat16 on a GPU that computes it), in eval mode."""
    return model.to(device=device, dtype=_dtype(device, dtype)).eval()


def load_folder(folder: str | Path, device: str = "auto", dtype: str = "auto") -> Runnable:
    """An exported adapter (`lightning-peft export`) on its base, or a merged folder (`merge`), ready to run.

    Raises `CardError` (one sentence) for a folder without `lightning_peft.json` or an adapter whose
    base no longer matches the fingerprint it was trained on.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CardError(f"{folder} is not a folder; pass the folder written by `lightning-peft export` or `merge`.")
    card = RunCard.read(folder)
    tokenizer = zoo.load_tokenizer(str(folder))
    task = task_from_spec(card.task, tokenizer, card.label_names) if card.task else None
    auto = task.auto_class() if task is not None else AutoModelForCausalLM
    kwargs = task.model_kwargs() if task is not None else {}
    if card.kind == "merged":
        model = auto.from_pretrained(str(folder), dtype=torch.float32, **kwargs)
    else:
        # a QLoRA adapter goes back onto its base quantized the same way (its fingerprint is of that form)
        quant.check_available(card.quantization)
        base = auto.from_pretrained(zoo.resolve(card.backbone), dtype=torch.float32, **kwargs,
                                    **quant.load_kwargs(card.quantization))
        if card.base_fingerprint:
            # in the form the card was written in: an export made before v2 records the sampled one
            found = checkpoint.fingerprint_like(card.base_fingerprint, base,
                                                exclude=task.head_modules(base) if task is not None else [])
            if found != card.base_fingerprint:
                raise CardError(f"The adapter in {folder} was trained on a base {card.backbone!r} with fingerprint "
                                f"{card.base_fingerprint}, but that name now loads a model with fingerprint {found}; "
                                "load the base it was trained on.")
        # the method's own reader (peft's format, soft prompts, bottleneck adapters); a card written
        # before cards named the method falls back on the soft-prompt reader, which reads peft's format too
        model = method_loader(card.method).load(base, folder) if card.method else load_soft_prompt(base, folder)
    input_format = InputFormat.from_dict(card.input_format) if card.input_format else None
    encoder_decoder = bool(zoo.load_config(str(folder) if card.kind == "merged" else card.backbone).is_encoder_decoder)
    if card.quantization is not None:  # bitsandbytes placed it; a dtype cast would undo the quantization
        return Runnable(model.eval(), tokenizer, task, input_format, encoder_decoder)
    return Runnable(ready(model, resolve_device(device), dtype), tokenizer, task, input_format, encoder_decoder)


def load_model(name: str, device: str = "auto", dtype: str = "auto") -> Runnable:
    """A folder with a card as `load_folder` does; any other name (zoo name, hub id, plain folder) as a
    causal or seq2seq LM, whichever its config is (anything else is refused in one sentence)."""
    if (Path(name) / CARD_NAME).is_file():
        return load_folder(name, device, dtype)
    encoder_decoder = bool(zoo.load_config(name).is_encoder_decoder)
    auto = AutoModelForSeq2SeqLM if encoder_decoder else AutoModelForCausalLM
    zoo.check_architecture(name, auto.__name__)
    model = auto.from_pretrained(zoo.resolve(name), dtype=torch.float32)
    return Runnable(ready(model, resolve_device(device), dtype), zoo.load_tokenizer(name), encoder_decoder=encoder_decoder)
