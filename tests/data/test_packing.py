"""Padding-free packing: a packed batch gives the padded batch's loss and per-example logits."""

import json

import pytest
import torch

import lightning_peft.attention  # noqa: F401  (registers packed_sdpa with transformers)
from lightning_peft.data.errors import DataConfigError
from lightning_peft.data.packing import PackingCollator, TokenBudgetBatchSampler
from lightning_peft.data.sft import SFTData
from lightning_peft.tasks.language_modeling import CausalLMSFT


@pytest.fixture(scope="module")
def tiny_llama():
    """Resolved before `data_cache` moves the cache (module scope), so the tiny model is not rebuilt per test."""
    from transformers import AutoModelForCausalLM

    from lightning_peft import zoo

    path = zoo.resolve("tiny-llama")
    return lambda: AutoModelForCausalLM.from_pretrained(path)


@pytest.fixture
def dialog_file(tmp_path):
    """Prompts and replies of very different lengths, so padding would be large."""
    records = [{"prompt": "tell me " + "more " * (i % 9), "response": "fine " * (1 + (i * 5) % 11) + str(i)}
               for i in range(24)]
    path = tmp_path / "dialog.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def _loader(path, tokenizer, packing, **kwargs):
    data = SFTData(path, tokenizer=tokenizer, batch_size=6, val_size=0, test_size=0, bucket_by_length=False,
                   packing=packing, **kwargs)
    data.setup("fit")
    return data.train_dataloader()


def _batches(path, tokenizer, packing, **kwargs):
    return list(_loader(path, tokenizer, packing, **kwargs))


def _padded_and_packed(path, tokenizer, which):
    """The `which`-th packed training batch, and the same examples as a padded batch."""
    padding, packing = _loader(path, tokenizer, False), _loader(path, tokenizer, True)
    indices = list(packing.batch_sampler)[which]
    return tuple(loader.collate_fn([loader.dataset[i] for i in indices]) for loader in (padding, packing))


def test_collator_restarts_positions_and_masks_prompts_and_boundaries():
    batch = PackingCollator()([{"input_ids": [5, 6, 7, 8], "prompt_length": 2}, {"input_ids": [9, 10], "prompt_length": 0}])
    assert set(batch) == {"input_ids", "position_ids", "labels"}  # no attention_mask: nothing is padding
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1]]
    # the second example has no prompt, but its first token must not be predicted from the first example
    assert batch["labels"].tolist() == [[-100, -100, 7, 8, -100, 10]]


@pytest.mark.parametrize("attention", ["sdpa", "eager", "packed_sdpa"])
def test_packed_loss_and_logits_equal_padded(tiny_llama, data_cache, tokenizer, dialog_file, attention):
    padded, packed = _padded_and_packed(dialog_file, tokenizer, 0)
    lengths = padded["attention_mask"].sum(1)
    assert packed["input_ids"].shape == (1, int(lengths.sum())) and lengths.min() < lengths.max()
    model = tiny_llama().eval()
    model.set_attn_implementation(attention)
    task = CausalLMSFT()
    task.bind(tokenizer, None)
    with torch.no_grad():
        padded_out, packed_out = task.step(model, padded), task.step(model, packed)
        packed_logits = model(**task.model_inputs(packed)).logits[0]
        padded_logits = model(**task.model_inputs(padded)).logits
    assert int(packed_out.tokens) == int(padded_out.tokens)
    torch.testing.assert_close(packed_out.loss, padded_out.loss, atol=1e-5, rtol=1e-5)
    start = 0
    for row, length in enumerate(lengths.tolist()):  # no attention across examples: same logits as alone
        torch.testing.assert_close(packed_logits[start:start + length], padded_logits[row, :length], atol=1e-4, rtol=1e-4)
        start += length


def test_packed_loss_with_chunked_loss_and_gradients(tiny_llama, data_cache, tokenizer, dialog_file):
    padded, packed = _padded_and_packed(dialog_file, tokenizer, 1)
    model = tiny_llama()  # train mode, dropout 0 in the tiny config
    grads = []
    for task, batch in ((CausalLMSFT(chunked_loss=False), padded), (CausalLMSFT(chunked_loss=True, loss_chunk_size=16), packed)):
        model.zero_grad()
        out = task.step(model, batch)
        out.loss.backward()
        grads.append((out.loss.detach(), model.model.layers[0].self_attn.q_proj.weight.grad.clone()))
    torch.testing.assert_close(grads[1][0], grads[0][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads[1][1], grads[0][1], atol=1e-5, rtol=1e-3)


def test_token_budget_batches_fill_the_budget_and_cover_every_example():
    lengths = [(7 * i) % 23 + 1 for i in range(40)]
    sampler = TokenBudgetBatchSampler(lengths, max_tokens=50, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(i for batch in batches for i in batch) == list(range(40))
    tokens = [sum(lengths[i] for i in batch) for batch in batches]
    assert max(tokens) <= 50
    assert tokens[0] == max(tokens), "the fullest row should come first"
    assert batches == list(TokenBudgetBatchSampler(lengths, max_tokens=50, seed=3))
    # greedy (seen in index order, unshuffled): a batch closes only when the next example would not fit
    ordered = list(TokenBudgetBatchSampler(lengths, max_tokens=50, shuffle=False))
    assert [i for batch in ordered for i in batch] == list(range(40))
    assert all(sum(lengths[i] for i in batch) + lengths[nxt[0]] > 50 for batch, nxt in zip(ordered, ordered[1:]))
    sampler.skip_batches(2)
    assert list(sampler) == batches[2:]


def test_sft_data_with_token_budget_packs_rows_within_budget(data_cache, tokenizer, dialog_file):
    batches = _batches(dialog_file, tokenizer, True, max_length=32, max_tokens_per_batch=64)
    assert all(b["input_ids"].shape[0] == 1 and b["input_ids"].shape[1] <= 64 for b in batches)
    assert sum(int((b["position_ids"] == 0).sum()) for b in batches) == 24


def test_sft_data_packs_its_longest_row_first(data_cache, tokenizer, dialog_file):
    widths = [b["input_ids"].shape[1] for b in _batches(dialog_file, tokenizer, True, max_length=32)]
    assert widths[0] == max(widths) and len(set(widths)) > 1


def test_bad_packing_options_fail_early(tokenizer):
    with pytest.raises(DataConfigError, match="packing: true"):
        SFTData("movie_dialog", tokenizer=tokenizer, max_tokens_per_batch=512)
    with pytest.raises(DataConfigError, match=">= max_length"):
        SFTData("movie_dialog", tokenizer=tokenizer, packing=True, max_length=256, max_tokens_per_batch=100)
    with pytest.raises(DataConfigError, match="smaller than the longest"):
        TokenBudgetBatchSampler([5, 30], max_tokens=10)
