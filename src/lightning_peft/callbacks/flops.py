"""Training FLOPs per token and device peak FLOP/s: the two halves of model FLOPs utilisation (MFU).

MFU = achieved model FLOP/s / peak FLOP/s, as defined in Chowdhery et al. 2022, "PaLM: Scaling
Language Modeling with Pathways", arXiv:2204.02311, Appendix B. There a full training step costs
`6N + 12·L·H·Q·T` FLOPs per token (N parameters, L layers, H heads of width Q, context T); the same
accounting is derived in Kaplan et al. 2020, "Scaling Laws for Neural Language Models",
arXiv:2001.08361, Section 2.1, and refined in Hoffmann et al. 2022, "Training Compute-Optimal Large
Language Models" (Chinchilla), arXiv:2203.15556, Appendix F.

Parameter-efficient methods freeze most weights, so the backward pass skips most weight gradients.
Per token, for each parameter that multiplies an activation:

* forward: 2 FLOPs (one multiply-add);
* backward, gradient w.r.t. the activations: 2 FLOPs, needed for every weight gradients flow through;
* backward, gradient w.r.t. the weight: 2 FLOPs, only for trainable weights.

That gives `4·N + 2·N_trainable` (which is `6·N` for full fine-tuning). Attention scores and the
weighted sum of values have no weights: forward `4·L·T·(H·Q)` per token, and their backward needs
the gradients of both operands (2x forward) whether or not the projections train, so the attention
term is `12·L·T·(H·Q)` in both cases, as in PaLM (which counts the full T×T score matrix, causal
masking included).

Approximations (documented, not hidden): gradients are assumed to flow through the whole network,
true whenever something at or below the first layer trains (prompts, adapters in every layer); a
method that trains only the top (a head) does less backward work than counted. Norms, biases and
elementwise ops are counted like matmul weights or not at all. Encoder-decoder models are counted
with the encoder's layer count only.
"""

from __future__ import annotations

import re
import warnings

import torch
from lightning.fabric.utilities.throughput import get_available_flops
from torch import nn

TERA = 1e12

# Dense (no structured sparsity) peak FLOP/s per device. Lightning's `get_available_flops` has the
# datasheet figures of most NVIDIA GPUs (H100 SXM and PCIe, A100, L4, T4, V100, the RTX cards, ...)
# and is asked for those. This table is what it lacks or counts otherwise, and is checked first. Keys:
# a regex matched against `torch.cuda.get_device_name()`, in order (the first match wins, so the
# specific variants come before the family name). Values: precision -> FLOP/s; {} means "unknown,
# no MFU guess" for a device Lightning would give a figure that is not its dense one.
PEAK_FLOPS: list[tuple[str, dict[str, float]]] = [
    # Lightning's H100 NVL figures are at least twice a card's dense ones (the with-sparsity or NVLink
    # pair figures), and the per-card figures vary between datasheet revisions: pass peak_flops.
    (r"H100 NVL|H200 NVL", {}),
    # H200 and GH200 share the Hopper SXM compute (the H100 SXM figures). Lightning's H200 keys
    # ("h200 sxm1") carry the datasheet's footnote digit, so no device name reaches them, and they
    # hold the with-sparsity figures.
    (r"H200", {"fp32": 66.9 * TERA, "tf32": 494.7 * TERA, "bf16": 989.4 * TERA, "fp16": 989.4 * TERA}),
    # Lightning reads every name with "L4" in it as the L4 (the L40 and L40S would get its figures).
    (r"L40S", {"fp32": 91.6 * TERA, "tf32": 183 * TERA, "bf16": 362 * TERA, "fp16": 362 * TERA}),
    (r"\bL40\b", {}),
    # Lightning has no A10, and gives the A10G (an AWS variant with no datasheet of its own) the A10's figures.
    (r"A10G", {}),
    (r"\bA10\b", {"fp32": 31.2 * TERA, "tf32": 62.5 * TERA, "bf16": 125 * TERA, "fp16": 125 * TERA}),
]

# Our precision names -> the dtype keys of Lightning's table.
LIGHTNING_DTYPES: dict[str, torch.dtype | str] = {
    "fp64": torch.float64, "fp32": torch.float32, "tf32": "tfloat32", "bf16": torch.bfloat16, "fp16": torch.float16,
}


def matmul_precision(trainer_precision: str) -> str:
    """The precision matmuls run in under a Lightning `precision` setting ("bf16", "fp16", "tf32", "fp32", ...).

    Mixed precision runs matmuls in the half type; fp32 runs them in TF32 when PyTorch allows it
    (`torch.set_float32_matmul_precision("high")`).
    """
    setting = str(trainer_precision)
    if setting.startswith("transformer-engine"):
        return "fp8"  # not in the peak table: pass peak_flops for MFU
    if setting.startswith("bf16"):
        return "bf16"
    if setting.startswith("16"):
        return "fp16"
    if setting.startswith("64"):
        return "fp64"
    return "tf32" if torch.get_float32_matmul_precision() != "highest" else "fp32"


def device_peak_flops(device_name: str, precision: str) -> float | None:
    """Dense peak FLOP/s of one CUDA device at `precision`, or None when it is not known.

    `device_name` is a name as `torch.cuda.get_device_name()` gives it. `PEAK_FLOPS` answers
    first; any other device is looked up with Lightning's
    `lightning.fabric.utilities.throughput.get_available_flops`, which takes a device rather than
    a name (it reads the name itself), so only a visible CUDA device of that name is looked up
    there. For "fp32" Lightning answers with the TF32 figure when PyTorch runs fp32 matmuls in TF32
    (`matmul_precision` then says "tf32" anyway). Lightning's warning for an unknown device is not
    passed on: `Throughput` says so itself, once.
    """
    for pattern, table in PEAK_FLOPS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return table.get(precision)
    dtype = LIGHTNING_DTYPES.get(precision)
    device = _visible_cuda_device(device_name)
    if dtype is None or device is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flops = get_available_flops(device, dtype)
    return None if flops is None else float(flops)


def _visible_cuda_device(name: str) -> torch.device | None:
    """The first visible CUDA device called `name`, or None."""
    if not torch.cuda.is_available():
        return None
    for index in range(torch.cuda.device_count()):
        if torch.cuda.get_device_name(index) == name:
            return torch.device("cuda", index)
    return None


def _lookup_tables(model: nn.Module) -> set[int]:
    """Ids of input lookup-table weights (token / position embeddings): they do no matmul.

    An output layer sharing its weight with the input embedding (tied LM head) does a d×V
    matmul per token, so its weight is not a lookup table here.
    """
    tables = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters(recurse=False)}
    for module in model.modules():  # `transformers` models (and peft's wrappers) name their output layer
        get_output = getattr(module, "get_output_embeddings", None)
        output = get_output() if callable(get_output) else None
        if isinstance(output, nn.Module):
            tables -= {id(p) for p in output.parameters(recurse=False)}
    return tables


def count_parameters(model: nn.Module, include_embeddings: bool = False) -> tuple[int, int]:
    """(N, N_trainable): parameters that multiply activations, and those of them with `requires_grad`.

    N excludes input lookup tables (token and position embeddings) unless `include_embeddings`;
    it includes the LM head even when tied to the input embedding. Shared parameters count once.
    """
    skip = set() if include_embeddings else _lookup_tables(model)
    counted = [p for p in model.parameters() if id(p) not in skip]
    return sum(p.numel() for p in counted), sum(p.numel() for p in counted if p.requires_grad)


def attention_shape(config: object) -> tuple[int, int] | None:
    """(layers, attention width H·Q) from a `transformers` config, or None when it names neither."""
    layers = getattr(config, "num_hidden_layers", None)
    heads = getattr(config, "num_attention_heads", None)
    hidden = getattr(config, "hidden_size", None)
    head_dim = getattr(config, "head_dim", None) or (hidden // heads if hidden and heads else None)
    if not (layers and heads and head_dim):
        return None
    return int(layers), int(heads * head_dim)


def training_flops_per_token(
    n_params: int, n_trainable: int, n_layers: int = 0, attention_width: int = 0, seq_len: int = 0
) -> float:
    """FLOPs of one training step (forward + backward) per token.

    `4·N + 2·N_trainable + 12·L·T·W` with W = H·Q the attention width (see the module docstring);
    `6·N + 12·L·T·W` for full fine-tuning, the PaLM Appendix B formula.
    """
    return 4.0 * n_params + 2.0 * n_trainable + 12.0 * n_layers * seq_len * attention_width
