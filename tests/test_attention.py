"""packed_sdpa: a packed row attends per example (the same numbers as each example alone); anything else is sdpa."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from lightning_peft import attention, zoo
from lightning_peft.attention import PACKED_SDPA, example_lengths

LENGTHS = [7, 1, 12, 5, 9]  # a one-token example included


@pytest.fixture(scope="module")
def tiny_llama_path():
    return zoo.resolve("tiny-llama")


def _model(path, kernel):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(path, attn_implementation=kernel)


def _packed_row():
    ids = torch.randint(5, 1000, (1, sum(LENGTHS)), generator=torch.Generator().manual_seed(0))
    positions = torch.cat([torch.arange(n) for n in LENGTHS])[None]
    return ids, positions


def test_example_lengths_split_where_positions_restart():
    assert example_lengths(torch.tensor([[0, 1, 2, 0, 1, 0]]), 6) == [3, 2, 1]
    assert example_lengths(torch.tensor([[0, 1, 2, 3]]), 4) is None  # one example: nothing to split
    assert example_lengths(torch.tensor([[0, 1, 0], [0, 1, 2]]), 3) is None  # several rows: sdpa with its mask
    assert example_lengths(None, 3) is None


@pytest.fixture
def sdpa_calls(monkeypatch):
    """(query length, mask given) of every call packed_sdpa makes to transformers' sdpa."""
    calls, sdpa = [], attention.sdpa_attention_forward

    def spy(module, query, key, value, attention_mask, **kwargs):
        calls.append((query.shape[2], attention_mask is not None))
        return sdpa(module, query, key, value, attention_mask, **kwargs)

    monkeypatch.setattr(attention, "sdpa_attention_forward", spy)
    return calls


def test_packed_row_attends_per_example_without_a_mask(tiny_llama_path, sdpa_calls):
    model = _model(tiny_llama_path, PACKED_SDPA).eval()
    ids, positions = _packed_row()
    with torch.no_grad():
        model(input_ids=ids, position_ids=positions, use_cache=False)
    layers = model.config.num_hidden_layers
    assert sdpa_calls == [(length, False) for length in LENGTHS] * layers


def test_packed_row_gives_each_example_its_logits_alone(tiny_llama_path):
    model = _model(tiny_llama_path, PACKED_SDPA).eval()
    assert model.config._attn_implementation == PACKED_SDPA
    ids, positions = _packed_row()
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=positions, use_cache=False).logits[0]
        start = 0
        for length in LENGTHS:
            alone = model(input_ids=ids[:, start:start + length], use_cache=False).logits[0]
            torch.testing.assert_close(packed[start:start + length], alone, atol=1e-5, rtol=1e-5)
            start += length


def test_packed_row_loss_and_gradients_equal_sdpa_with_the_block_mask(tiny_llama_path):
    ids, positions = _packed_row()
    results = []
    for kernel in ("sdpa", PACKED_SDPA):
        model = _model(tiny_llama_path, kernel)
        loss = model(input_ids=ids, position_ids=positions, labels=ids, use_cache=False).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (sdpa_loss, sdpa_grads), (packed_loss, packed_grads) = results
    torch.testing.assert_close(packed_loss, sdpa_loss, atol=1e-6, rtol=1e-6)
    for name, grad in sdpa_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, atol=1e-6, rtol=1e-4, msg=name)


def test_padded_batches_and_own_masks_are_plain_sdpa(tiny_llama_path, sdpa_calls):
    sdpa, packed = _model(tiny_llama_path, "sdpa").eval(), _model(tiny_llama_path, PACKED_SDPA).eval()
    ids = torch.randint(5, 1000, (2, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    # Restarting positions with an attention mask of the user's (one with a hole, one all ones): transformers
    # does not treat the row as packed, so neither does packed_sdpa.
    positions = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3, 4]])
    with torch.no_grad():
        for inputs in ({"input_ids": ids, "attention_mask": mask},
                       {"input_ids": ids[:1], "position_ids": positions, "attention_mask": torch.tensor([[1] * 6 + [0] + [1] * 2])},
                       {"input_ids": ids[:1], "position_ids": positions, "attention_mask": torch.ones(1, 9, dtype=torch.long)}):
            assert torch.equal(packed(**inputs, use_cache=False).logits, sdpa(**inputs, use_cache=False).logits)
    assert {length for length, _ in sdpa_calls} == {9}  # never split
