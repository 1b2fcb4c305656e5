"""Chunked cross-entropy gives the standard loss and gradients without building the full logits."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_peft.methods.lora import Lora
from lightning_peft.methods.selective import FullFineTuning
from lightning_peft.tasks.base import TaskConfigError
from lightning_peft.tasks.language_modeling import CausalLMSFT
from lightning_peft.tasks.losses import chunked_lm_loss, linear_cross_entropy, module_cross_entropy
from tests.conftest import tiny_causal_lm


def _reference(hidden, weight, bias, targets):
    return F.cross_entropy(F.linear(hidden, weight, bias).float(), targets, reduction="sum")


def _grads(loss, tensors):
    return torch.autograd.grad(loss, tensors)


@pytest.mark.parametrize("chunk_size", [1, 7, 64])
def test_linear_cross_entropy_matches_loss_and_gradients(chunk_size):
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(23, 16, generator=generator, requires_grad=True)
    weight = torch.randn(50, 16, generator=generator, requires_grad=True)
    bias = torch.randn(50, generator=generator, requires_grad=True)
    targets = torch.randint(0, 50, (23,), generator=generator)
    expected = _reference(hidden, weight, bias, targets)
    got = linear_cross_entropy(hidden, weight, targets, bias, chunk_size=chunk_size)
    torch.testing.assert_close(got, expected)
    # a non-unit upstream gradient (e.g. division by the token count) must scale every gradient
    for g, e in zip(_grads(got / 5, [hidden, weight, bias]), _grads(expected / 5, [hidden, weight, bias])):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-4)


def test_linear_cross_entropy_with_frozen_weight_gives_hidden_gradient_only():
    hidden = torch.randn(9, 8, requires_grad=True)
    weight = torch.randn(30, 8)  # frozen, as under LoRA
    targets = torch.randint(0, 30, (9,))
    got = linear_cross_entropy(hidden, weight, targets, chunk_size=4)
    (grad,) = _grads(got, [hidden])
    (expected,) = _grads(_reference(hidden, weight, None, targets), [hidden])
    torch.testing.assert_close(grad, expected, atol=1e-5, rtol=1e-4)
    assert weight.grad is None


def test_module_cross_entropy_matches_for_a_non_linear_head():
    head = nn.Sequential(nn.Linear(8, 12), nn.Tanh(), nn.Linear(12, 40))
    hidden = torch.randn(17, 8, requires_grad=True)
    targets = torch.randint(0, 40, (17,))
    got = module_cross_entropy(hidden, head, targets, chunk_size=5)
    expected = F.cross_entropy(head(hidden), targets, reduction="sum")
    torch.testing.assert_close(got, expected)
    params = [hidden, *head.parameters()]
    for g, e in zip(_grads(got, params), _grads(expected, params)):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-4)


def test_chunked_lm_loss_skips_ignored_positions():
    hidden = torch.randn(2, 5, 8)
    head = nn.Linear(8, 20, bias=False)
    labels = torch.tensor([[-100, -100, 3, 4, -100], [-100, 1, 2, 3, 4]])
    total, count = chunked_lm_loss(hidden, head, labels, chunk_size=2)
    assert int(count) == 6
    expected = F.cross_entropy(head(hidden[:, :-1]).reshape(-1, 20), labels[:, 1:].reshape(-1), reduction="sum")
    torch.testing.assert_close(total, expected)


def _batch():
    ids = torch.randint(10, 1000, (3, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    mask[2, 5:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :4] = -100  # prompts
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _step_and_grads(task, model, batch):
    model.zero_grad()
    out = task.step(model, batch)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _compare_tasks(model, batch=None):
    batch = batch or _batch()
    standard, chunked = CausalLMSFT(chunked_loss=False), CausalLMSFT(chunked_loss=True, loss_chunk_size=5)
    expected, expected_grads = _step_and_grads(standard, model, batch)
    got, grads = _step_and_grads(chunked, model, batch)
    torch.testing.assert_close(got.loss, expected.loss, atol=1e-5, rtol=1e-5)
    assert int(got.tokens) == int(expected.tokens) == int((batch["labels"][:, 1:] != -100).sum())
    torch.testing.assert_close(got.token_nll, expected.token_nll, atol=1e-3, rtol=1e-5)
    assert grads.keys() == expected_grads.keys() and grads
    for name in grads:
        torch.testing.assert_close(grads[name], expected_grads[name], atol=1e-5, rtol=1e-3, msg=name)
    return grads


def test_chunked_task_equals_standard_loss_with_lora():
    model = Lora(r=4, dropout=0.0, target_modules=["q_proj", "v_proj"]).apply(tiny_causal_lm()).model
    for name, param in model.named_parameters():  # B starts at 0: make the adapter matter for the gradients
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)
    grads = _compare_tasks(model)
    assert all("lora_" in name for name in grads)


def test_chunked_task_equals_standard_loss_with_full_finetuning_and_tied_head():
    model = FullFineTuning().apply(tiny_causal_lm()).model
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied, trainable
    grads = _compare_tasks(model)
    assert any("embed_tokens" in name for name in grads)


def test_chunked_task_with_lora_on_the_lm_head_and_never_full_logits():
    model = Lora(r=4, dropout=0.0, target_modules=["q_proj", "lm_head"]).apply(tiny_causal_lm()).model
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)
    rows = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, i, out: rows.append(out.shape[:-1].numel()))
    _compare_tasks(model)
    hook.remove()
    standard_rows, chunked_rows = rows[0], rows[1:]
    assert standard_rows == 3 * 12
    assert max(chunked_rows) <= 5  # the model's own call projects nothing; each chunk at most 5 tokens


def test_chunked_loss_rejects_bad_chunk_size():
    with pytest.raises(TaskConfigError, match="loss_chunk_size"):
        CausalLMSFT(chunked_loss=True, loss_chunk_size=0)
    with pytest.raises(TaskConfigError, match="true, false or auto"):
        CausalLMSFT(chunked_loss="yes")


def _projected_rows(task, model, batch):
    """How many positions the LM head projected onto the vocabulary during one step, and the step's loss."""
    rows = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, i, out: rows.append(out.shape[:-1].numel()))
    try:
        loss = task.step(model, batch).loss
    finally:
        hook.remove()
    return sum(rows), loss


def test_the_default_projects_only_labelled_positions_with_the_models_own_loss():
    model, batch = tiny_causal_lm(), _batch()
    default_rows, default_loss = _projected_rows(CausalLMSFT(), model, batch)
    own_rows, own_loss = _projected_rows(CausalLMSFT(chunked_loss=False), model, batch)
    # The model's own forward projects no position through its head; the fused chunked loss projects the
    # labelled ones itself (`test_chunked_lm_loss_skips_ignored_positions`).
    assert own_rows == 3 * 12 and default_rows == 0
    torch.testing.assert_close(default_loss, own_loss, atol=1e-5, rtol=1e-5)


def test_auto_keeps_the_models_own_loss_where_a_logit_transform_follows_the_head():
    model, batch = tiny_causal_lm(), _batch()
    model.config.final_logit_softcapping = 30.0  # e.g. Gemma-2: logits are soft-capped after the head
    rows, _ = _projected_rows(CausalLMSFT(), model, batch)
    assert rows == 3 * 12  # the model's own loss: every position, as the model defines it
    with pytest.raises(TaskConfigError, match="final_logit_softcapping.*set chunked_loss: false"):
        CausalLMSFT(chunked_loss=True).step(model, batch)
