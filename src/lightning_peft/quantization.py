"""Frozen bases in 8-bit (LLM.int8, Dettmers et al. 2022) or 4-bit NF4 (QLoRA, Dettmers et al. 2023) via bitsandbytes."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

import torch

Quantization = Literal["int8", "nf4"]

# Strategies that shard parameters cannot shard bitsandbytes' packed int8/uint8 weights here.
SHARDING_STRATEGIES = ("FSDPStrategy", "DeepSpeedStrategy")
# The same strategies by the names Lightning's registry knows them ("fsdp", "deepspeed_stage_2", ...).
SHARDING_PREFIXES = ("fsdp", "deepspeed")
# bitsandbytes 0.50.2 loads and trains int8 and nf4 bases on a CPU (checked: a LoRA fit on tiny-llama).
# Older releases were CUDA-only outside a separate multi-backend preview, so they are not trusted on a CPU.
MIN_CPU_BITSANDBYTES = (0, 50)


class QuantizationError(ValueError):
    """A quantized base cannot be used in this setup."""


def _bitsandbytes_version() -> tuple[int, ...] | None:
    try:
        return tuple(int(part) for part in version("bitsandbytes").split(".")[:2] if part.isdigit())
    except PackageNotFoundError:
        return None


def check_available(kind: Quantization | None) -> None:
    """Fail early when a quantized base is asked for where bitsandbytes cannot run it."""
    if kind is None:
        return
    installed = _bitsandbytes_version()
    if installed is None:
        raise QuantizationError(f"quantization={kind!r} needs bitsandbytes; `pip install bitsandbytes`.")
    if not torch.cuda.is_available() and installed < MIN_CPU_BITSANDBYTES:
        raise QuantizationError(
            f"quantization={kind!r} without a CUDA GPU needs bitsandbytes>="
            f"{'.'.join(map(str, MIN_CPU_BITSANDBYTES))} (installed: {'.'.join(map(str, installed))}); "
            "upgrade bitsandbytes, run on a GPU, or drop model.init_args.quantization."
        )


def strategy_name(strategy: Any) -> str:
    """A strategy's name whether given as a registry string, a `{class_path: ...}` config, a class or an instance."""
    if isinstance(strategy, str):
        return strategy.rsplit(".", 1)[-1]  # "fsdp", or a class path typed on the command line
    if isinstance(strategy, dict):
        return str(strategy.get("class_path", "")).rsplit(".", 1)[-1]
    if hasattr(strategy, "class_path"):  # a jsonargparse Namespace
        return str(strategy.class_path).rsplit(".", 1)[-1]
    return strategy.__name__ if isinstance(strategy, type) else type(strategy).__name__


def check_strategy(kind: Quantization | None, strategy: Any) -> None:
    """Reject a quantized base under a strategy that shards parameters (FSDP, DeepSpeed)."""
    name = strategy_name(strategy)
    if kind is not None and (name in SHARDING_STRATEGIES or name.lower().startswith(SHARDING_PREFIXES)):
        raise QuantizationError(
            f"A {kind}-quantized base cannot be sharded by strategy {name!r}; use strategy 'ddp' (or 'auto') "
            "with a quantized base, or drop model.init_args.quantization to shard with FSDP/DeepSpeed."
        )


def keep_4bit_layout(model: torch.nn.Module) -> torch.nn.Module:
    """Keep bitsandbytes' 4-bit weights in the layout they were quantized in when they run on a CPU; returns `model`.

    bitsandbytes 0.50.2 repacks a `Linear4bit` weight for its AVX512-BF16 kernel at the first CPU forward without
    gradients (a validation step), rounding the block scales to bfloat16, and `state_dict()`, which Lightning calls at
    every checkpoint save, unpacks it and quantizes the scales again: each save moved an NF4 base (tiny-llama's
    logits by 2.6e-3 per call, cumulatively), so a run that saves checkpoints trained on another base than one that
    does not. Without the repacking, evaluation dequantizes as training does (slower on such CPUs, the same on
    others; CUDA is unaffected). A no-op for a model without 4-bit layers.
    """
    from bitsandbytes.nn import Linear4bit

    for module in model.modules():
        if isinstance(module, Linear4bit):
            module.support_avx512bf16_for_cpu = False  # bitsandbytes' switch for the repacking (nn/modules.py)
    return model


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
    device = torch.cuda.current_device() if torch.cuda.is_available() else "cpu"
    return {"quantization_config": config, "device_map": {"": device}}
