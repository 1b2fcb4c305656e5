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

import torch
from torch import nn

TERA = 1e12

# Dense (no structured sparsity) peak FLOP/s per device, from NVIDIA's datasheets. Keys: a regex
# matched against `torch.cuda.get_device_name()`, checked in order (the first match wins, so the
# specific variants come before the family name). Values: precision -> FLOP/s.
PEAK_FLOPS: list[tuple[str, dict[str, float]]] = [
    (r"H100 PCIe", {"fp32": 51.2 * TERA, "tf32": 378 * TERA, "bf16": 756 * TERA, "fp16": 756 * TERA}),
    (r"H100 NVL|H200 NVL", {}),  # per-card figures vary between datasheet revisions: pass peak_flops
    # H100 SXM ("NVIDIA H100 80GB HBM3"), H200 and GH200 share the Hopper SXM compute.
    (r"H100|H200|GH200", {"fp32": 66.9 * TERA, "tf32": 494.7 * TERA, "bf16": 989.4 * TERA, "fp16": 989.4 * TERA}),
    (r"A100", {"fp32": 19.5 * TERA, "tf32": 156 * TERA, "bf16": 312 * TERA, "fp16": 312 * TERA}),
    (r"L40S", {"fp32": 91.6 * TERA, "tf32": 183 * TERA, "bf16": 362 * TERA, "fp16": 362 * TERA}),
    (r"\bL4\b", {"fp32": 30.3 * TERA, "tf32": 60 * TERA, "bf16": 121 * TERA, "fp16": 121 * TERA}),
    (r"\bA10\b", {"fp32": 31.2 * TERA, "tf32": 62.5 * TERA, "bf16": 125 * TERA, "fp16": 125 * TERA}),
    (r"V100-PCIE", {"fp32": 14 * TERA, "fp16": 112 * TERA}),
    (r"V100", {"fp32": 15.7 * TERA, "fp16": 125 * TERA}),
    (r"\bT4\b", {"fp32": 8.1 * TERA, "fp16": 65 * TERA}),
]


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
    """Dense peak FLOP/s of one device at `precision`, or None when the table does not know it."""
    for pattern, table in PEAK_FLOPS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return table.get(precision)
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
