"""Frozen bases in 8-bit (LLM.int8, Dettmers et al. 2022) or 4-bit NF4 (QLoRA, Dettmers et al. 2023) via bitsandbytes."""

from __future__ import annotations

from typing import Literal

import torch

Quantization = Literal["int8", "nf4"]

# Strategies that shard parameters cannot shard bitsandbytes' packed int8/uint8 weights here.
SHARDING_STRATEGIES = ("FSDPStrategy", "DeepSpeedStrategy")


class QuantizationError(ValueError):
    """A quantized base cannot be used in this setup."""


def check_available(kind: Quantization | None) -> None:
    """Fail early when a quantized base is asked for where bitsandbytes cannot run it."""
    if kind is None:
        return
    if not torch.cuda.is_available():
        raise QuantizationError(
            f"quantization={kind!r} needs a CUDA GPU (bitsandbytes' quantized matmuls do not run on this CPU); "
            "drop model.init_args.quantization or run on a GPU."
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise QuantizationError(f"quantization={kind!r} needs bitsandbytes; `pip install bitsandbytes`.") from err


def check_strategy(kind: Quantization | None, strategy_name: str) -> None:
    if kind is not None and strategy_name in SHARDING_STRATEGIES:
        raise QuantizationError(
            f"A {kind} quantized base cannot be sharded by {strategy_name}; use strategy 'ddp' (or 'auto') "
            "with a quantized base, or drop quantization to shard with FSDP/DeepSpeed."
        )


def load_kwargs(kind: Quantization | None, compute_dtype: torch.dtype = torch.bfloat16) -> dict:
    """Keyword arguments for `from_pretrained` that load the base quantized (none when `kind` is None)."""
    if kind is None:
        return {}
    from transformers import BitsAndBytesConfig

    if kind == "int8":
        config = BitsAndBytesConfig(load_in_8bit=True)
    else:
        config = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute_dtype
        )
    return {"quantization_config": config, "device_map": {"": torch.cuda.current_device()}}
