"""LoRA's input dropout with a one-byte mask kept for the backward pass (same numbers, less memory).

LoRA (Hu et al. 2021, arXiv:2106.09685) as peft implements it computes `B(A(dropout(x)))` for
every adapted layer. On a CPU, PyTorch's dropout is `x * noise` with a float `noise` tensor of x's
size and dtype, and autograd keeps that noise for the backward pass: with dropout on every linear
layer this is a second copy of every adapter's input, held until the backward pass reaches it.

`CompactDropout` draws the same noise from the same generator (so outputs, gradients and the RNG
stream are bitwise those of `nn.Dropout`), but keeps only which elements survived, as a bool
tensor (1 byte per element instead of 4 in fp32), and rebuilds the scale in the backward pass. On
CUDA PyTorch's fused dropout already keeps a bool mask, so there it simply calls it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class _CompactDropoutFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        # PyTorch's CPU dropout (aten::_dropout): noise ~ Bernoulli(1 - p), scaled by 1 / (1 - p).
        noise = torch.empty_like(x).bernoulli_(1 - p).div_(1 - p)
        ctx.save_for_backward(noise != 0)
        ctx.p = p
        return x * noise

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (kept,) = ctx.saved_tensors
        return grad * kept.to(grad.dtype).div_(1 - ctx.p), None


class CompactDropout(nn.Dropout):
    """`nn.Dropout` whose backward keeps a bool mask instead of the float noise (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu" or not x.requires_grad:
            return F.dropout(x, self.p, self.training, self.inplace)
        return _CompactDropoutFunction.apply(x, self.p)


def use_compact_dropout(model: nn.Module) -> int:
    """Swap the `nn.Dropout` of every peft LoRA layer's `lora_dropout` for `CompactDropout`; return how many."""
    swapped = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, nn.ModuleDict):
            continue
        for name, dropout in dropouts.items():
            if type(dropout) is nn.Dropout and not dropout.inplace:
                dropouts[name] = CompactDropout(dropout.p)
                swapped += 1
    return swapped
