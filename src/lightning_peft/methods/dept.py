"""DePT and EPT: a short soft prompt plus a low-rank, position-indexed offset to the input embeddings.

- DePT: Shi & Lipani, ICLR 2024, "DePT: Decomposed Prompt Tuning for Parameter-Efficient
  Fine-tuning", arXiv:2309.05173 (reference code: ZhengxiangShi/DePT,
  `peft/tuners/prompt_tuning_lora.py`). Vanilla prompt tuning's long prompt is split into a
  shorter prompt P [m, d] and a pair A [s, r], B [r, d] whose product updates the embedding of
  the token at each input position. The same parameter count, a shorter sequence: faster.
- EPT: Lan et al., AAAI 2025, "Efficient Prompt Tuning by Multi-Space Projection and Prompt
  Fusion" (arXiv preprint, May 2024; its id is not checked here). DePT's decomposition, plus the short prompt enriched from the
  low-rank part (prompt fusion) and projected into several subspaces mixed by a gate. No code is
  public; the forms used here are our reading of the paper (see `EPT`).

Both wrap the frozen model in a `PromptedModel` (our code: peft has neither) and work for
decoder-only models (prompt in front of the sequence) and encoder-decoder models (prompt in front
of the encoder input).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from ..constants import IGNORE_INDEX
from .base import Adapted, MethodConfigError, freeze
from .prompt_inputs import PromptedModel, initial_prompt, is_encoder_decoder
from .soft_prompt_io import PromptedMethod
from .targets import check_targets


class InputTooLongError(ValueError):
    """An input has more tokens than the `max_length` the DePT offset was built for."""


class DePTModel(PromptedModel):
    """A frozen model reading ``[P; E + scale * (A @ B)[positions]]``: DePT's forward.

    ``soft_prompt`` is P [m, d], ``lowrank_a`` A [s, r], ``lowrank_b`` B [r, d]; see `DePT`.
    """

    def __init__(
        self, base: nn.Module, prompt: torch.Tensor, max_length: int, rank: int, alpha: float, pad_to_max_length: bool
    ) -> None:
        super().__init__(base)
        device = prompt.device
        self.soft_prompt = nn.Parameter(prompt)
        self.lowrank_a = nn.Parameter(torch.empty(max_length, rank, device=device))
        self.lowrank_b = nn.Parameter(torch.zeros(rank, prompt.shape[1], device=device))
        nn.init.kaiming_uniform_(self.lowrank_a, a=math.sqrt(5))
        self.scale = alpha / math.sqrt(rank)
        self.max_length, self.pad_to_max_length = max_length, pad_to_max_length

    def offset_table(self) -> torch.Tensor:
        """(alpha / sqrt(r)) * A @ B: row i is added to the embedding of the input's i-th token."""
        return self.scale * (self.lowrank_a @ self.lowrank_b)

    def short_prompt(self) -> torch.Tensor:
        """P [m, d]; EPT overrides this with its fused, projected prompt."""
        return self.soft_prompt

    def token_positions(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Each token's index counted from its row's first real token (cumsum(mask) - 1), so padding sides agree."""
        batch, length = inputs_embeds.shape[:2]
        real = attention_mask.sum(dim=1).max().item() if attention_mask is not None else length
        if real > self.max_length:
            raise InputTooLongError(
                f"An input has {real} tokens but DePT's offset covers max_length={self.max_length} positions; "
                f"truncate the data to {self.max_length} tokens (data max_length) or build DePT with a larger max_length."
            )
        if attention_mask is None:
            return torch.arange(length, device=inputs_embeds.device).expand(batch, length)
        return (attention_mask.long().cumsum(dim=1) - 1).clamp(0, self.max_length - 1)

    def prompt(self, inputs_embeds, attention_mask):
        offsets = F.embedding(self.token_positions(inputs_embeds, attention_mask), self.offset_table())
        prompt = self.short_prompt().to(inputs_embeds.dtype).unsqueeze(0).expand(inputs_embeds.shape[0], -1, -1)
        return prompt, inputs_embeds + offsets.to(inputs_embeds.dtype)

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, labels=None, inputs_embeds=None, **kwargs):
        if self.pad_to_max_length:
            if inputs_embeds is None:
                inputs_embeds = self.get_input_embeddings()(input_ids)
            inputs_embeds, attention_mask, position_ids, labels = self._pad(
                inputs_embeds, attention_mask, position_ids, labels
            )
            input_ids = None
        return super().forward(input_ids, attention_mask, position_ids, labels, inputs_embeds, **kwargs)

    def _pad(self, inputs_embeds, attention_mask, position_ids, labels):
        """Pad to s columns as the paper does (masked, so only cost changes). Decoder-only models are
        padded on the left, so the last column (read with ``logits_to_keep=1``) stays the last token;
        encoder inputs on the right. Token-aligned labels get -100 and position ids 0 in the new columns."""
        batch, length = inputs_embeds.shape[:2]
        extra = self.max_length - length
        if extra <= 0:  # too long is reported by token_positions, with the real token count
            return inputs_embeds, attention_mask, position_ids, labels
        left = not is_encoder_decoder(self.base)

        def pad(tensor: torch.Tensor, value: float) -> torch.Tensor:
            widths = [0, 0] * (tensor.dim() - 2) + ([extra, 0] if left else [0, extra])
            return F.pad(tensor, widths, value=value)

        if attention_mask is None:
            attention_mask = torch.ones(batch, length, dtype=torch.long, device=inputs_embeds.device)
        if labels is not None and labels.dim() == 2 and labels.shape[1] == length and left:
            labels = pad(labels, IGNORE_INDEX)
        position_ids = pad(position_ids, 0) if position_ids is not None else None
        return pad(inputs_embeds, 0.0), pad(attention_mask, 0), position_ids, labels


class DePT(PromptedMethod):
    """Decomposed Prompt Tuning (Shi & Lipani, ICLR 2024, arXiv:2309.05173).

    Forward: E = embed(input_ids); E[i] += (alpha / sqrt(r)) * (A @ B)[i] for the input's i-th real
    token (prompt positions get no offset; i counts from the first real token, so left and right
    padding agree); the model reads [P; E] with the attention mask extended by m ones. The scale
    alpha / sqrt(r) is the reference's (`PromptEmbeddingLoRA.scaling`). Init: P from the embeddings
    of `init_text` (tiled / truncated to m) or of random vocabulary tokens; A kaiming-uniform
    (a = sqrt 5); B zeros, so training starts at prompt tuning with P. Trainable parameters:
    m*d + s*r + r*d (paper: m=60, r=30 at d=768, s=256 matches 100-token prompt tuning; see
    `matching_budget`). The paper trains P with lr 3e-1..4e-1 and A, B with 1e-4..5e-3: that is what
    the two groups are for.

    Example::

        from transformers import AutoModelForSeq2SeqLM
        from lightning_peft.methods.dept import DePT
        adapted = DePT(num_virtual_tokens=60, rank=30, max_length=256).apply(AutoModelForSeq2SeqLM.from_pretrained(path))
        adapted.groups["prompt"], adapted.groups["lowrank"]  # {"soft_prompt": P}, {"lowrank_a": A, "lowrank_b": B}

    Args:
        num_virtual_tokens: Length m of the short prompt (paper: 60, or 40 with r=45).
        rank: Rank r of the offset A @ B (paper: 30).
        max_length: Positions s the offset covers: the longest input (in tokens) the data may give.
            Longer inputs raise an error; they are never truncated here. Paper: 256.
        alpha: Numerator of the offset's scale alpha / sqrt(r) (reference: 8).
        init_text: Text whose token embeddings initialise P (tiled / truncated to m), e.g. a task
            instruction; none: embeddings of random vocabulary tokens.
        tokenizer: Tokenizer for `init_text`: a loaded tokenizer, or a name / folder resolved by
            `lightning_peft.zoo.load_tokenizer`; none: the model's own folder.
        pad_to_max_length: Pad every batch to s tokens as the paper does (faithful cost; results
            are the same, padding is masked). False: only the batch's own length, faster.
        modules_to_save: Modules of the base trained in full besides the prompt (e.g. a new head).
    """

    def __init__(
        self,
        num_virtual_tokens: int = 60,
        rank: int = 30,
        max_length: int = 256,
        alpha: float = 8.0,
        init_text: str | None = None,
        tokenizer: str | PreTrainedTokenizerBase | None = None,
        pad_to_max_length: bool = True,
        modules_to_save: list[str] | None = None,
    ) -> None:
        for name, value in (("num_virtual_tokens", num_virtual_tokens), ("rank", rank), ("max_length", max_length)):
            if not isinstance(value, int) or value < 1:
                raise MethodConfigError(f"{type(self).__name__} {name}={value!r} must be a positive integer.")
        if alpha <= 0:
            raise MethodConfigError(f"{type(self).__name__} alpha={alpha} must be positive (reference: 8).")
        self.num_virtual_tokens, self.rank, self.max_length, self.alpha = num_virtual_tokens, rank, max_length, alpha
        self.init_text, self.tokenizer = init_text, tokenizer
        self.pad_to_max_length = pad_to_max_length
        self.modules_to_save = list(modules_to_save or [])

    @property
    def max_input_length(self) -> int:
        """The offset covers s = `max_length` positions; longer inputs are refused, never truncated."""
        return self.max_length

    @staticmethod
    def matching_budget(prompt_tokens: int, hidden_size: int, max_length: int, num_virtual_tokens: int) -> int:
        """The largest rank r with m*d + s*r + r*d <= prompt_tokens*d: DePT at the budget of vanilla prompt tuning.

        ``matching_budget(100, 768, 256, 60) == 30`` and ``(100, 768, 256, 40) == 45``, the paper's pairs.
        """
        rank = (prompt_tokens - num_virtual_tokens) * hidden_size // (max_length + hidden_size)
        if rank < 1:
            raise MethodConfigError(
                f"num_virtual_tokens={num_virtual_tokens} leaves no budget for a low-rank pair within {prompt_tokens} "
                "prompt tokens; choose fewer virtual tokens."
            )
        return rank

    def init_args(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this method's parameter shapes (saved with an export).

        The init text and tokenizer are left out: an export's weights replace the initial values.
        """
        return {"num_virtual_tokens": self.num_virtual_tokens, "rank": self.rank, "max_length": self.max_length,
                "alpha": self.alpha, "pad_to_max_length": self.pad_to_max_length, "modules_to_save": self.modules_to_save}

    def build(self, model: nn.Module, prompt: torch.Tensor) -> DePTModel:
        return DePTModel(model, prompt, self.max_length, self.rank, self.alpha, self.pad_to_max_length)

    def groups(self, wrapper: DePTModel) -> dict[str, dict[str, nn.Parameter]]:
        return {"prompt": {"soft_prompt": wrapper.soft_prompt},
                "lowrank": {"lowrank_a": wrapper.lowrank_a, "lowrank_b": wrapper.lowrank_b}}

    def apply(self, model: nn.Module, modules_to_save: list[str] | None = None) -> Adapted:
        """Freeze `model`, wrap it, and return the wrapper with groups "prompt", "lowrank" (and "head")."""
        prompt = initial_prompt(model, self.num_virtual_tokens, self.init_text, self.tokenizer, type(self).__name__)
        save = sorted(set(self.modules_to_save) | set(modules_to_save or []))
        check_targets(model, save, what="modules_to_save") if save else None
        freeze(model)
        wrapper = self.build(model, prompt)
        groups = self.groups(wrapper)
        heads = {f"base.{n}": p for m in save for n, p in model.named_parameters() if n == m or n.startswith(f"{m}.")}
        for parameter in heads.values():
            parameter.requires_grad_(True)
        if heads:
            groups["head"] = heads
        wrapper.head_names = [name.removeprefix("base.") for name in heads]
        wrapper.method_config = {"class_path": f"{type(self).__module__}.{type(self).__qualname__}",
                                 "init_args": {**self.init_args(), "modules_to_save": save}}  # the task's head too
        return Adapted(wrapper, groups)


class EPTModel(DePTModel):
    """DePT's forward with the short prompt replaced by EPT's fused, gated multi-space projection of it."""

    def __init__(self, base, prompt, max_length, rank, alpha, pad_to_max_length, num_spaces: int, space_rank: int,
                 fusion: bool, gate_pooling: str, gate_bias: bool = True) -> None:
        super().__init__(base, prompt, max_length, rank, alpha, pad_to_max_length)
        hidden = prompt.shape[1]
        self.fusion, self.gate_pooling = fusion, gate_pooling
        self.space_down = nn.Parameter(torch.empty(num_spaces, hidden, space_rank, device=prompt.device))
        self.space_up = nn.Parameter(torch.zeros(num_spaces, space_rank, hidden, device=prompt.device))
        for down in self.space_down:
            nn.init.kaiming_uniform_(down, a=math.sqrt(5))
        self.gate = nn.Linear(hidden, num_spaces, bias=gate_bias, device=prompt.device)

    def fused_prompt(self) -> torch.Tensor:
        """P + softmax(P O^T / sqrt(d)) O with O = the offset table's rows (single head, no projections)."""
        prompt = self.soft_prompt
        if not self.fusion:
            return prompt
        table = self.offset_table()
        return prompt + F.scaled_dot_product_attention(prompt.unsqueeze(0), table.unsqueeze(0), table.unsqueeze(0))[0]

    def short_prompt(self) -> torch.Tensor:
        """P' + sum_i g_i * P' U_i V_i, with g = softmax(gate(pool(P'))) over the N spaces."""
        fused = self.fused_prompt()
        pooled = fused.mean(dim=0) if self.gate_pooling == "mean" else fused.max(dim=0).values
        weights = torch.softmax(self.gate(pooled), dim=-1)  # [N]
        projected = torch.einsum("md,ndq,nqe->nme", fused, self.space_down, self.space_up)  # [N, m, d]
        return fused + torch.einsum("n,nme->me", weights, projected)


class EPT(DePT):
    """Efficient Prompt Tuning (Lan et al., AAAI 2025, "Efficient Prompt Tuning by Multi-Space Projection
    and Prompt Fusion", arXiv preprint May 2024): DePT plus prompt fusion and a gated multi-space projection.

    No public code; the paper's exact forms are unverified here and these are our choices:

    - prompt fusion: P' = P + Attention(Q=P, K=V=O), single-head scaled dot-product attention from
      the short prompt to the rows of the low-rank offset O = (alpha / sqrt(r)) A @ B, added as a
      residual; no projection matrices (unverified). With B = 0 at init the fusion term is zero.
    - multi-space projection: N low-rank maps U_i [d, q] V_i [q, d] of P'; the prompt the model
      reads is P' + sum_i g_i P' U_i V_i with g = softmax(W pool(P') + b) (unverified: the residual
      and V_i = 0 at init, so EPT starts exactly at DePT and so at prompt tuning).

    Groups: "prompt" (P) and "lowrank" (A, B) as in DePT, plus "projection" (U, V and the gate),
    so the projection can get its own learning rate.

    Args:
        num_spaces: Number N of projection subspaces mixed by the gate.
        space_rank: Rank q of each subspace projection.
        fusion: Enrich the prompt from the low-rank offset by attention (False: projection only).
        gate_pooling: How the gate summarises the prompt: "mean" or "max" over its m vectors.
        gate_bias: Give the gate a bias (N parameters). Without it the trainable count is a multiple of
            64 at d = 576, so EPT can match DePT's budget exactly (see `parameter_count`).
        **dept: DePT's arguments (num_virtual_tokens, rank, max_length, alpha, init_text, tokenizer,
            pad_to_max_length, modules_to_save), with DePT's defaults.
    """

    def __init__(
        self,
        num_spaces: int = 4,
        space_rank: int = 8,
        fusion: bool = True,
        gate_pooling: Literal["mean", "max"] = "mean",
        gate_bias: bool = True,
        **dept: Any,
    ) -> None:
        super().__init__(**dept)
        if num_spaces < 1 or space_rank < 1:
            raise MethodConfigError(f"EPT num_spaces={num_spaces} and space_rank={space_rank} must be positive integers.")
        if gate_pooling not in ("mean", "max"):
            raise MethodConfigError(f"EPT gate_pooling={gate_pooling!r} is unknown; use 'mean' or 'max'.")
        self.num_spaces, self.space_rank, self.fusion, self.gate_pooling = num_spaces, space_rank, fusion, gate_pooling
        self.gate_bias = gate_bias

    def init_args(self) -> dict[str, Any]:
        return {**super().init_args(), "num_spaces": self.num_spaces, "space_rank": self.space_rank,
                "fusion": self.fusion, "gate_pooling": self.gate_pooling, "gate_bias": self.gate_bias}

    def build(self, model, prompt) -> EPTModel:
        return EPTModel(model, prompt, self.max_length, self.rank, self.alpha, self.pad_to_max_length,
                        self.num_spaces, self.space_rank, self.fusion, self.gate_pooling, self.gate_bias)

    def groups(self, wrapper: EPTModel) -> dict[str, dict[str, nn.Parameter]]:
        projection = {"space_down": wrapper.space_down, "space_up": wrapper.space_up,
                      **{f"gate.{n}": p for n, p in wrapper.gate.named_parameters()}}
        return {**super().groups(wrapper), "projection": projection}
