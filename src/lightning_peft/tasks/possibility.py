"""Possibility Exploration Fine-Tuning: MLE on matching (prompt_k, response_k) + unlikelihood on mismatched pairs.

"Improving Linguistic Diversity of Large Language Models with Possibility Exploration Fine-Tuning"
(Mai et al. 2024, https://arxiv.org/abs/2412.03343; reference code mailong25/peft_diversity). The
prompt names a possibility number k; the model learns response_k under prompt_k (MLE) and learns
that response_j (j != k) is *not* the answer to prompt_k (unlikelihood, Welleck et al. 2019,
arXiv:1908.04319), so that the number, not chance alone, picks which of the possible responses
comes out. The unlikelihood applies to the lead tokens of content words only (the data marks them,
`lightning_peft.data.content_words`), so the function words every response shares are not pushed down.

Batches come from `lightning_peft.data.PossibilityData`: `labels` on the matching rows,
`unlikelihood_labels` on the mismatched rows. Perplexity is over the matching rows' response tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..constants import IGNORE_INDEX
from .base import TaskConfigError, TaskOutput
from .language_modeling import _LanguageModeling

UNLIKELIHOOD_KEY = "unlikelihood_labels"


def unlikelihood_sum(logits: torch.Tensor, targets: torch.Tensor, floor: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """`sum_t -log(1 - p(target_t))` over the positions whose target is not -100, and their count.

    `logits` are `[..., vocab]`, already aligned with `targets` `[...]` (shifted); `1 - p` is
    clamped at `floor` (the reference's 1e-6) so a token the model is sure of gives a finite loss.
    """
    keep = targets != IGNORE_INDEX
    probs = F.softmax(logits[keep].float(), dim=-1).gather(1, targets[keep].unsqueeze(1)).squeeze(1)
    return -torch.log(torch.clamp(1.0 - probs, min=floor)).sum(), keep.sum()


class PossibilityExploration(_LanguageModeling):
    """loss = mean MLE over matching response tokens + `unlikelihood_weight` * mean unlikelihood over pushed tokens.

    Both terms are means over their own tokens, as in the reference: `L = L_mle + 0.5 * L_ul`, with
    `L_ul = mean_t -log(1 - p(y_t | prompt_k, y_<t))` over the content-word lead tokens y_t of
    responses j != k. A batch without mismatched rows (`max_negatives: 0`) trains MLE alone.

    Args:
        unlikelihood_weight: Weight of the unlikelihood term (the paper's 0.5).
    """

    auto_class_name = "AutoModelForCausalLM"
    shift = 1  # the first label is never predicted

    def __init__(self, unlikelihood_weight: float = 0.5) -> None:
        if isinstance(unlikelihood_weight, bool) or not isinstance(unlikelihood_weight, (int, float)) \
                or unlikelihood_weight < 0:
            raise TaskConfigError(f"unlikelihood_weight must be a number >= 0 (the paper's 0.5), got {unlikelihood_weight!r}.")
        self.unlikelihood_weight = float(unlikelihood_weight)

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> TaskOutput:
        if UNLIKELIHOOD_KEY not in batch:
            raise TaskConfigError("PossibilityExploration needs batches with mismatched pairs ('unlikelihood_labels'); "
                                  "use lightning_peft.data.PossibilityData as the data module.")
        logits = model(**self.model_inputs(batch)).logits[:, :-1]
        labels, pushed = batch["labels"][:, 1:], batch[UNLIKELIHOOD_KEY][:, 1:]
        keep = labels != IGNORE_INDEX
        nll = F.cross_entropy(logits[keep].float(), labels[keep], reduction="sum")
        tokens = keep.sum()
        loss = nll / tokens.clamp(min=1)
        if self.unlikelihood_weight:
            total, count = unlikelihood_sum(logits, pushed)
            loss = loss + self.unlikelihood_weight * total / count.clamp(min=1)
        return TaskOutput(loss=loss, token_nll=nll.detach().double(), tokens=tokens)
