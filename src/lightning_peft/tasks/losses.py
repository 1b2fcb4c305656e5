"""Chunked cross-entropy: the language-model loss without the full `[tokens, vocab]` logits tensor.

With a 49k-50k-word vocabulary the logits of a batch (and their float32 copy and gradient) are
often the largest tensors of a fine-tuning step. Following the idea of "Cut Your Losses in
Large-Vocabulary Language Models" (Wijmans et al. 2024, arXiv:2411.09009) and Liger Kernel's fused
linear cross-entropy (Hsu et al. 2024, arXiv:2410.10989), the loss is computed from the final hidden
states and the LM head a chunk of tokens at a time, and only at positions that carry a label.

- A plain `nn.Linear` head takes the fast path (`linear_cross_entropy`): each chunk's gradients
  with respect to the hidden states, weight and bias are computed during the forward pass and the
  chunk's logits are dropped at once; backward only scales them. Same matmul count as the standard loss.
- Any other head module (e.g. one wrapped by peft because LoRA targets it) runs chunk by chunk
  under activation checkpointing (`module_cross_entropy`): backward recomputes one chunk's logits at a time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..constants import IGNORE_INDEX

DEFAULT_CHUNK_SIZE = 1024  # tokens per chunk: 1024 x 49152 float32 logits = 200 MB, vs GBs for a whole batch


class _LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of `hidden @ weight.T + bias` against `targets`, gradients computed chunk by chunk."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size):
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        need_any = need_hidden or need_weight or need_bias
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight else None
        grad_bias = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_bias else None
        for start in range(0, hidden.shape[0], chunk_size):
            chunk, target = hidden[start:start + chunk_size], targets[start:start + chunk_size]
            logits = F.linear(chunk, weight, bias).float()  # upcast like transformers' own loss
            log_norm = torch.logsumexp(logits, dim=-1)
            total += (log_norm - logits.gather(1, target.unsqueeze(1)).squeeze(1)).sum()
            if not need_any:
                continue
            # d(loss)/d(logits) = softmax - one_hot(target), built in place over the logits buffer.
            grad_logits = logits.sub_(log_norm.unsqueeze(1)).exp_()
            grad_logits[torch.arange(len(target), device=target.device), target] -= 1.0
            if need_bias:
                grad_bias += grad_logits.sum(0)
            grad_logits = grad_logits.to(chunk.dtype)
            if need_hidden:
                grad_hidden[start:start + chunk_size] = grad_logits @ weight.to(chunk.dtype)
            if need_weight:
                grad_weight += (grad_logits.t() @ chunk).float()
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        weight_dtype, bias_dtype = ctx.dtypes
        return (
            None if grad_hidden is None else grad_hidden * grad_total.to(grad_hidden.dtype),
            None if grad_weight is None else (grad_weight * grad_total).to(weight_dtype),
            None if grad_bias is None else (grad_bias * grad_total).to(bias_dtype),
            None,
            None,
        )


def _check(hidden: torch.Tensor, targets: torch.Tensor, chunk_size: int) -> None:
    if hidden.dim() != 2 or targets.shape != hidden.shape[:1]:
        raise ValueError(f"Expected hidden [tokens, hidden] and targets [tokens], got {tuple(hidden.shape)} and "
                         f"{tuple(targets.shape)}; select the labelled positions first (see chunked_lm_loss).")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}.")


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> torch.Tensor:
    """Sum over tokens of `-log softmax(hidden @ weight.T + bias)[target]`, never holding more than one chunk's logits.

    Args:
        hidden: `[tokens, hidden]` final hidden states of the labelled positions only.
        weight: `[vocab, hidden]` LM-head weight (may be tied to the input embeddings, trainable or frozen).
        targets: `[tokens]` target ids (no ignore index: drop those positions beforehand).
        bias: Optional `[vocab]` head bias.
        chunk_size: Tokens per chunk.

    Returns:
        A float32 scalar; its gradients flow to `hidden`, `weight` and `bias` when they require grad.
    """
    _check(hidden, targets, chunk_size)
    return _LinearCrossEntropy.apply(hidden, weight, bias, targets, chunk_size)


def _chunk_loss(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(hidden).float(), targets, reduction="sum")


def module_cross_entropy(
    hidden: torch.Tensor, head: nn.Module, targets: torch.Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> torch.Tensor:
    """Like `linear_cross_entropy` for any head module (e.g. a LoRA-wrapped `lm_head`), via checkpointed chunks.

    Costs one extra head forward per chunk in the backward pass (the recomputation).
    """
    _check(hidden, targets, chunk_size)
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.shape[0], chunk_size):
        chunk, target = hidden[start:start + chunk_size], targets[start:start + chunk_size]
        if torch.is_grad_enabled():
            total = total + checkpoint(_chunk_loss, head, chunk, target, use_reentrant=False)
        else:
            total = total + _chunk_loss(head, chunk, target)
    return total


def head_cross_entropy(
    hidden: torch.Tensor, head: nn.Module, targets: torch.Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> torch.Tensor:
    """Summed chunked cross-entropy through `head`: the fused path for a plain `nn.Linear`, else checkpointed chunks."""
    if type(head) is nn.Linear:
        return linear_cross_entropy(hidden, head.weight, targets, head.bias, chunk_size)
    return module_cross_entropy(hidden, head, targets, chunk_size)


def chunked_lm_loss(
    hidden: torch.Tensor, head: nn.Module, labels: torch.Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE, shift: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token loss from `[batch, length, hidden]` states: (summed loss, number of counted tokens).

    Position `i` predicts `labels[:, i + shift]`; positions whose label is -100 (prompt, padding,
    packed-example boundaries) get no logits at all. The mean loss is `sum / count`, exactly what
    `transformers`' built-in causal-LM loss returns (float32 logits, mean over labelled tokens).
    """
    if shift:
        hidden, labels = hidden[:, :-shift], labels[:, shift:]
    keep = labels != IGNORE_INDEX
    count = keep.sum()
    return head_cross_entropy(hidden[keep], head, labels[keep], chunk_size), count


def distillation_kl(student_scores: torch.Tensor, teacher_scores: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """Knowledge distillation (Hinton, Vinyals & Dean 2015, arXiv:1503.02531), as PET's final classifier uses it.

    `KL(softmax(teacher / T) || softmax(student / T)) * T**2`, averaged over the batch; both arguments are
    `[batch, classes]` unnormalised scores. The `T**2` keeps gradient sizes comparable across temperatures.
    """
    log_student = F.log_softmax(student_scores.float() / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_scores.float() / temperature, dim=-1)
    return F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True) * temperature ** 2
