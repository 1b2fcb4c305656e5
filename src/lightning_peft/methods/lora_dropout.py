"""LoRA's input dropout, keeping 1-byte masks and shared inputs for the backward pass (same numbers, less memory).

LoRA (Hu et al. 2021, arXiv:2106.09685) as peft implements it computes `B(A(dropout(x)))` for
every adapted layer. On a CPU, PyTorch's dropout is `x * noise` with a float `noise` tensor of x's
size and dtype, and autograd keeps that noise for the backward pass: with dropout on every linear
layer this is a second copy of every adapter's input, held until the backward pass reaches it.

`CompactDropout` draws the same Bernoulli samples from the same generator (so outputs, gradients and
the RNG stream are bitwise those of `nn.Dropout`), but into bytes, keeps only those (1 byte per
element instead of 4 in fp32), and rebuilds the scaled noise from them in the backward pass. On
CUDA PyTorch's fused dropout already keeps a bool mask, so there it simply calls it.

The dropped input itself is a second copy: `A`'s weight gradient needs `dropout(x)`, so autograd keeps
it, one per adapter, although `q_proj`, `k_proj` and `v_proj` (and `gate_proj`, `up_proj`) all read
the same `x`. For plain LoRA layers (peft computes `lora_B(lora_A(dropout(x)))`; DoRA and other
variants use the dropped input elsewhere and keep `CompactDropout`), the dropout therefore moves into
`lora_A` (`DroppedLoraA`): it keeps `x`, which the adapters reading it share, and its 1-byte mask, and
rebuilds `dropout(x)` in the backward pass, bitwise as it was. The `lora_dropout` slot then holds a
`DeferredDropout`, which passes its input through.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _draw_kept(x: torch.Tensor, p: float) -> torch.Tensor:
    # PyTorch's CPU dropout (aten::_dropout) draws noise ~ Bernoulli(1 - p) into a tensor of x's dtype.
    # Drawn into bytes instead: the same samples and generator state, and kept as they are for backward.
    return torch.empty_like(x, dtype=torch.uint8).bernoulli_(1 - p)


def _noise(kept: torch.Tensor, dtype: torch.dtype, p: float) -> torch.Tensor:
    # aten::_dropout's noise, scaled by 1 / (1 - p) with the same op, so bitwise the same values.
    return kept.to(dtype).div_(1 - p)


class _CompactDropoutFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        kept = _draw_kept(x, p)
        ctx.save_for_backward(kept)
        ctx.p = p
        return x * _noise(kept, x.dtype, p)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (kept,) = ctx.saved_tensors
        return grad * _noise(kept, grad.dtype, ctx.p), None


class CompactDropout(nn.Dropout):
    """`nn.Dropout` whose backward keeps a 1-byte mask instead of the float noise (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu" or not x.requires_grad:
            return F.dropout(x, self.p, self.training, self.inplace)
        return _CompactDropoutFunction.apply(x, self.p)


class _DroppedLinearFunction(torch.autograd.Function):
    """`linear(dropout(x), weight)` keeping `x` and a 1-byte mask for backward, not the dropped copy."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, p: float) -> torch.Tensor:
        kept = _draw_kept(x, p)
        ctx.save_for_backward(x, kept, weight)
        ctx.p = p
        return F.linear(x * _noise(kept, x.dtype, p), weight)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        x, kept, weight = ctx.saved_tensors
        noise = _noise(kept, x.dtype, ctx.p)
        grad_x = grad.matmul(weight) * noise if ctx.needs_input_grad[0] else None
        grad_weight = None
        if ctx.needs_input_grad[1]:  # as linear's backward: [out, tokens] @ [tokens, in]
            grad_weight = grad.reshape(-1, grad.shape[-1]).t().mm((x * noise).reshape(-1, x.shape[-1]))
        return grad_x, grad_weight, None


class DroppedLoraA(nn.Linear):
    """LoRA's `A` with the adapter's input dropout applied inside it (see the module docstring).

    Same parameters and state-dict keys as the `nn.Linear` it replaces. Outside CPU training with
    autograd (eval, CUDA, autocast, no gradient) it is `linear(dropout(x))` with PyTorch's own ops.
    """

    def __init__(self, in_features: int, out_features: int, p: float, **kwargs) -> None:
        super().__init__(in_features, out_features, bias=False, **kwargs)
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)
        if (not self.training or self.p == 0.0 or x.device.type != "cpu" or not needs_grad
                or torch.is_autocast_enabled("cpu")):
            return F.linear(F.dropout(x, self.p, self.training), self.weight)
        return _DroppedLinearFunction.apply(x, self.weight, self.p)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dropout={self.p}"


class DeferredDropout(nn.Dropout):
    """The `lora_dropout` slot of a layer whose `lora_A` is a `DroppedLoraA`: the identity (the dropout is in A)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def extra_repr(self) -> str:
        return f"p={self.p}, applied in lora_A"


def _fuse(layer: nn.Module, name: str, dropout: nn.Dropout) -> bool:
    """Move `dropout` into `layer.lora_A[name]` where peft computes plain `lora_B(lora_A(dropout(x)))`."""
    lora_as, variants = getattr(layer, "lora_A", None), getattr(layer, "lora_variant", None)
    lora_a = lora_as[name] if isinstance(lora_as, nn.ModuleDict) and name in lora_as else None
    if variants is None or name in variants or type(lora_a) is not nn.Linear or lora_a.bias is not None:
        return False
    fused = DroppedLoraA(lora_a.in_features, lora_a.out_features, dropout.p, device="meta")
    fused.weight = lora_a.weight  # the very parameter, with its device, dtype, requires_grad and hooks
    fused.train(lora_a.training)
    layer.lora_A[name] = fused
    layer.lora_dropout[name] = DeferredDropout(dropout.p)
    return True


def use_compact_dropout(model: nn.Module) -> int:
    """Make the dropout of every peft LoRA layer keep 1-byte masks; return how many were changed.

    Plain LoRA adapters get a `DroppedLoraA` (and a `DeferredDropout` in their `lora_dropout` slot);
    DoRA and other variants get a `CompactDropout`.
    """
    swapped = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, nn.ModuleDict):
            continue
        for name, dropout in list(dropouts.items()):
            if type(dropout) is nn.Dropout and not dropout.inplace and 0 < dropout.p < 1:  # p=1: zeros, no draw
                if not _fuse(module, name, dropout):
                    dropouts[name] = CompactDropout(dropout.p)
                swapped += 1
    return swapped
