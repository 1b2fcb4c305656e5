"""PossibilityExploration: MLE on matching rows + 0.5 * unlikelihood on the pushed tokens of mismatched rows."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lightning_peft.constants import IGNORE_INDEX as X
from lightning_peft.tasks import PossibilityExploration, TaskConfigError
from lightning_peft.tasks.possibility import unlikelihood_sum


class FixedLogits(nn.Module):
    """A stand-in model that returns the given logits, whatever the input."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone())

    def forward(self, **_):
        return SimpleNamespace(logits=self.logits)


def _batch(labels, pushed):
    labels, pushed = torch.tensor(labels), torch.tensor(pushed)
    return {"input_ids": torch.zeros_like(labels), "attention_mask": torch.ones_like(labels), "labels": labels,
            "unlikelihood_labels": pushed}


def test_unlikelihood_is_minus_log_of_one_minus_p_over_marked_positions():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]]))
    total, count = unlikelihood_sum(logits, torch.tensor([0, 1, X]))
    assert count == 2 and float(total) == pytest.approx(-math.log(0.5) - math.log(0.2), rel=1e-5)


def test_loss_is_mean_mle_plus_half_mean_unlikelihood_on_pushed_tokens_only():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5)
    # row 0 matching (labels at positions 2, 3); row 1 mismatched with one pushed token at position 3
    batch = _batch([[X, X, 1, 2], [X, X, X, X]], [[X, X, X, X], [X, X, X, 4]])
    output = PossibilityExploration().step(FixedLogits(logits), batch)
    log_p = logits.log_softmax(-1)
    mle = -(log_p[0, 1, 1] + log_p[0, 2, 2]) / 2  # position t predicts label t + 1
    ul = -torch.log(1 - log_p[1, 2, 4].exp())
    assert float(output.loss) == pytest.approx(float(mle + 0.5 * ul), rel=1e-5)
    assert int(output.tokens) == 2 and float(output.token_nll) == pytest.approx(float(2 * mle), rel=1e-5)
    # a mismatched row's other positions (function words, the prompt) do not count
    changed = logits.clone()
    changed[1, :2] += 10.0
    assert float(PossibilityExploration().step(FixedLogits(changed), batch).loss) == pytest.approx(float(output.loss))


def _probabilities(model, batch):
    log_p = model(input_ids=batch["input_ids"]).logits[:, :-1].log_softmax(-1)
    labels, pushed = batch["labels"][:, 1:], batch["unlikelihood_labels"][:, 1:]
    matching = log_p.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)[labels != X].mean()
    mismatched = log_p.gather(-1, pushed.clamp(min=0).unsqueeze(-1)).squeeze(-1)[pushed != X].exp().mean()
    return float(matching), float(mismatched)


def _tiny_lm() -> nn.Module:
    """A one-layer Llama over 16 token ids: each id starts near 1/16 probability, so steps move it visibly."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16))


def _train(weight: float, batch, steps: int = 20):
    model = _tiny_lm()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    task = PossibilityExploration(unlikelihood_weight=weight)
    before = _probabilities(model, batch)
    for _ in range(steps):
        optimizer.zero_grad()
        task.step(model, batch).loss.backward()
        optimizer.step()
    return before, _probabilities(model, batch)


def test_training_raises_matching_likelihood_and_pushes_mismatched_content_tokens_down():
    # prompts A and B share the context; A's reply is "7 8 9", B's is "7 5 6"; mismatched row: prompt A + B's reply,
    # pushing 5 (a content-word lead) and leaving 7 (shared) alone
    batch = _batch([[X, X, 7, 8, 9], [X, X, 7, 5, 6], [X, X, X, X, X]], [[X] * 5, [X] * 5, [X, X, X, 5, X]])
    batch["input_ids"] = torch.tensor([[3, 11, 7, 8, 9], [3, 12, 7, 5, 6], [3, 11, 7, 5, 6]])
    (matching_before, mismatched_before), (matching_mle, mismatched_mle) = _train(0.0, batch)
    _, (matching_ul, mismatched_ul) = _train(0.5, batch)
    assert matching_ul > matching_before and matching_mle > matching_before
    assert mismatched_ul < mismatched_mle / 2  # the unlikelihood term pushes B's reply down under prompt A
    assert mismatched_ul < mismatched_before / 4


def test_a_batch_without_mismatched_rows_is_refused_in_one_sentence():
    batch = _batch([[X, 1]], [[X, X]])
    del batch["unlikelihood_labels"]
    with pytest.raises(TaskConfigError, match="use lightning_peft.data.PossibilityData"):
        PossibilityExploration().step(FixedLogits(torch.zeros(1, 2, 3)), batch)


@pytest.mark.parametrize("weight", [-0.5, "half", True])
def test_a_bad_unlikelihood_weight_is_refused(weight):
    with pytest.raises(TaskConfigError, match="unlikelihood_weight must be a number >= 0"):
        PossibilityExploration(unlikelihood_weight=weight)
