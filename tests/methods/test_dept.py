"""DePT and EPT: parameter budget, equality with prompt tuning at init, the position-indexed offset, errors."""

import math

import pytest
import torch
from torch import nn
from transformers import AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

from lightning_peft import zoo
from lightning_peft.methods.base import MethodConfigError
from lightning_peft.methods.dept import EPT, DePT, InputTooLongError
from lightning_peft.methods.prompts import PromptTuning
from lightning_peft.tasks.classification import left_align
from tests.conftest import tiny_causal_lm

D = 64  # hidden size of every tiny model


def _model(name):
    if name == "tiny-t5":
        return AutoModelForSeq2SeqLM.from_pretrained(zoo.resolve(name))
    return tiny_causal_lm(name)


def _batch():
    ids = torch.randint(20, 1000, (2, 7), generator=torch.Generator().manual_seed(5))
    return ids, torch.tensor([[1] * 7, [1] * 5 + [0] * 2])


def _randomize(*parameters):
    with torch.no_grad():
        for p in parameters:
            p.normal_(0, 0.5)


def test_dept_trains_prompt_and_lowrank_with_the_papers_count():
    adapted = DePT(num_virtual_tokens=6, rank=3, max_length=32).apply(tiny_causal_lm())
    assert set(adapted.groups) == {"prompt", "lowrank"}
    assert adapted.num_trainable() == 6 * D + 32 * 3 + 3 * D
    assert {n for n, p in adapted.model.named_parameters() if p.requires_grad} == adapted.trainable_names()


def test_matching_budget_reproduces_the_papers_pairs():
    assert DePT.matching_budget(100, 768, 256, 60) == 30
    assert DePT.matching_budget(100, 768, 256, 40) == 45
    r = DePT.matching_budget(100, 64, 32, 20)
    assert 20 * 64 + 32 * r + r * 64 <= 100 * 64 < 20 * 64 + 32 * (r + 1) + (r + 1) * 64
    with pytest.raises(MethodConfigError, match="choose fewer virtual tokens"):
        DePT.matching_budget(100, 768, 256, 100)


@pytest.mark.parametrize("pad", [False, True], ids=["batch-length", "padded-to-s"])
@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-t5"])
def test_dept_at_init_equals_peft_prompt_tuning_with_the_same_prompt(name, pad):
    """B = 0 at init, so DePT must compute exactly peft's prompt tuning with P copied in."""
    dept = DePT(num_virtual_tokens=5, rank=4, max_length=16, pad_to_max_length=pad).apply(_model(name)).model.eval()
    peft_model = PromptTuning(num_virtual_tokens=5).apply(_model(name)).model.eval()
    with torch.no_grad():
        peft_model.prompt_encoder["default"].embedding.weight.copy_(dept.soft_prompt)
        ids, mask = _batch()
        extra = {"decoder_input_ids": ids[:, :3]} if name == "tiny-t5" else {}
        ours = dept(input_ids=ids, attention_mask=mask, **extra).logits
        theirs = peft_model(input_ids=ids, attention_mask=mask, **extra).logits
    if name != "tiny-t5":  # decoder-only logits: [prompt; (padding to s;) input]; compare the input's real tokens
        ours, theirs = ours[:, -7:][mask.bool()], theirs[:, -7:][mask.bool()]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_offset_is_scaled_low_rank_product_added_at_input_positions():
    base = tiny_causal_lm().eval()
    model = DePT(num_virtual_tokens=4, rank=2, max_length=10, alpha=8.0, pad_to_max_length=False).apply(base).model
    _randomize(model.lowrank_b)
    ids = torch.randint(20, 1000, (1, 6))
    with torch.no_grad():
        offset = 8.0 / math.sqrt(2) * (model.lowrank_a @ model.lowrank_b)[:6]
        expected = base(inputs_embeds=torch.cat([model.soft_prompt, base.get_input_embeddings()(ids)[0] + offset])[None])
        torch.testing.assert_close(model(input_ids=ids).logits, expected.logits)


@pytest.mark.parametrize("method", [DePT, EPT])
@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_padding_side_and_pad_to_max_length_do_not_change_the_answer(name, method):
    """Offsets index tokens from the first real one, so the verbalizer's left-aligned call matches unpadded rows."""
    model = method(num_virtual_tokens=4, rank=2, max_length=12).apply(tiny_causal_lm(name)).model.eval()
    _randomize(model.lowrank_b, *([model.space_up] if method is EPT else []))
    ids, mask = _batch()
    left_ids, left_mask = left_align(ids, mask)
    with torch.no_grad():
        left = model(input_ids=left_ids, attention_mask=left_mask,
                     position_ids=(left_mask.cumsum(1) - 1).clamp(min=0), logits_to_keep=1).logits[:, -1]
        alone = model(input_ids=ids[1:, :5]).logits[0, -1]
        model.pad_to_max_length = False
        unpadded_batch = model(input_ids=left_ids, attention_mask=left_mask, logits_to_keep=1).logits[:, -1]
    torch.testing.assert_close(left[1], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(unpadded_batch, left, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", [DePT, EPT])
@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-t5"])
def test_forward_and_backward_reach_every_group(name, method):
    adapted = method(num_virtual_tokens=4, rank=2, max_length=12).apply(_model(name))
    ids = torch.randint(20, 1000, (2, 6))
    labels = ids[:, :3].clone() if name == "tiny-t5" else ids
    adapted.model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss.backward()
    params = {n: p for group in adapted.groups.values() for n, p in group.items()}
    assert all(p.grad is not None for p in params.values())
    # A, U and the gate get zero gradient while B and V are zero (as in LoRA); the rest must move
    for n in ["soft_prompt", "lowrank_b"] + (["space_up"] if method is EPT else []):
        assert params[n].grad.abs().sum() > 0, n
    assert all(p.grad is None for n, p in adapted.model.named_parameters() if n.startswith("base."))


def test_ept_starts_exactly_at_dept_and_adds_a_projection_group():
    ept = EPT(num_virtual_tokens=4, rank=2, max_length=12, num_spaces=3, space_rank=5).apply(tiny_causal_lm())
    dept = DePT(num_virtual_tokens=4, rank=2, max_length=12).apply(tiny_causal_lm())
    assert set(ept.groups) == {"prompt", "lowrank", "projection"}
    assert ept.groups["prompt"].keys() == dept.groups["prompt"].keys()
    assert ept.num_trainable() == dept.num_trainable() + 3 * 2 * D * 5 + D * 3 + 3
    with torch.no_grad():
        for name in ("soft_prompt", "lowrank_a", "lowrank_b"):
            getattr(dept.model, name).copy_(getattr(ept.model, name))
        ids = torch.randint(20, 1000, (1, 6))
        torch.testing.assert_close(ept.model(input_ids=ids).logits, dept.model(input_ids=ids).logits)


def test_ept_fusion_reads_the_low_rank_offset():
    model = EPT(num_virtual_tokens=4, rank=2, max_length=12).apply(tiny_causal_lm()).model
    with torch.no_grad():
        assert torch.equal(model.fused_prompt(), model.soft_prompt)  # B = 0: nothing to fuse yet
        _randomize(model.lowrank_b)
        fused = model.fused_prompt()
        model.fusion = False
        assert not torch.allclose(fused, model.fused_prompt())


def test_init_text_tiles_the_text_embeddings():
    base = tiny_causal_lm()
    token_ids = zoo.load_tokenizer("tiny-llama")("yes or no", add_special_tokens=False)["input_ids"]
    expected = base.get_input_embeddings().weight[torch.tensor(token_ids * 4)[:8]].detach()
    model = DePT(num_virtual_tokens=8, rank=2, max_length=12, init_text="yes or no", tokenizer="tiny-llama").apply(base).model
    torch.testing.assert_close(model.soft_prompt.detach(), expected)


def test_too_long_input_is_an_error_naming_max_length():
    model = DePT(num_virtual_tokens=2, rank=2, max_length=4).apply(tiny_causal_lm()).model
    with pytest.raises(InputTooLongError, match=r"6 tokens but DePT's offset covers max_length=4 .* larger max_length"):
        model(input_ids=torch.randint(20, 1000, (1, 6)))


def test_model_without_input_embeddings_is_refused_at_apply():
    class NoEmbeddings(nn.Module):
        def get_input_embeddings(self):
            raise NotImplementedError

    with pytest.raises(MethodConfigError, match="NoEmbeddings exposes none through get_input_embeddings"):
        DePT().apply(NoEmbeddings())


def test_head_is_trained_and_classifier_reads_the_last_real_token():
    pad = zoo.load_tokenizer("tiny-llama").pad_token_id
    base = AutoModelForSequenceClassification.from_pretrained(zoo.resolve("tiny-llama"), num_labels=3, pad_token_id=pad)
    adapted = DePT(num_virtual_tokens=3, rank=2, max_length=12).apply(base, modules_to_save=["score"])
    assert list(adapted.groups["head"]) == ["base.score.weight"]
    model = adapted.model.eval()
    _randomize(model.lowrank_b)
    ids, mask = _batch()
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).logits[1],
                                   model(input_ids=ids[1:, :5]).logits[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kwargs", [{"rank": 0}, {"max_length": 0}, {"num_virtual_tokens": -1}, {"alpha": 0}])
def test_bad_dept_arguments_rejected_at_construction(kwargs):
    with pytest.raises(MethodConfigError):
        DePT(**kwargs)


@pytest.mark.parametrize("kwargs", [{"num_spaces": 0}, {"space_rank": 0}, {"gate_pooling": "sum"}])
def test_bad_ept_arguments_rejected_at_construction(kwargs):
    with pytest.raises(MethodConfigError):
        EPT(**kwargs)


def test_dept_trains_under_gradient_checkpointing():
    base = tiny_causal_lm()
    base.gradient_checkpointing_enable()
    adapted = DePT(num_virtual_tokens=3, rank=2, max_length=12).apply(base)
    adapted.model.train()
    ids = torch.randint(20, 1000, (2, 6))
    adapted.model(input_ids=ids, labels=ids).loss.backward()
    assert adapted.model.soft_prompt.grad.abs().sum() > 0 and adapted.model.lowrank_b.grad.abs().sum() > 0


def _recipe_method(name: str) -> tuple[type, dict]:
    """The method class and shape arguments of a shipped soft-prompt recipe (init text left out: random init)."""
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2]
    method = yaml.safe_load((root / "configs" / "soft_prompt" / f"{name}_trec6.yaml").read_text())["model"]["init_args"]["method"]
    args = {k: v for k, v in method["init_args"].items() if k != "init_text"}
    return {"DePT": DePT, "EPT": EPT}[method["class_path"].rsplit(".", 1)[1]], args


def test_ept_recipe_trains_exactly_as_many_parameters_as_the_dept_recipe_on_smollm2():
    """The EPT recipe is shaped to DePT's budget (57,600 at SmolLM2's d = 576), so the comparison is at equal size."""
    from transformers import LlamaConfig, LlamaForCausalLM

    base = LlamaConfig(hidden_size=576, intermediate_size=64, num_hidden_layers=1, num_attention_heads=9,
                       num_key_value_heads=3, vocab_size=256)  # d = SmolLM2-135M's; the count depends on nothing else
    counts = {}
    for name in ("dept", "ept"):
        method, args = _recipe_method(name)
        counts[name] = method(**args).apply(LlamaForCausalLM(base)).num_trainable()
    assert counts == {"dept": 57_600, "ept": 57_600}


def test_ept_without_gate_bias_drops_only_the_bias():
    with_bias = EPT(num_virtual_tokens=4, rank=2, max_length=12, num_spaces=3).apply(tiny_causal_lm())
    without = EPT(num_virtual_tokens=4, rank=2, max_length=12, num_spaces=3, gate_bias=False).apply(tiny_causal_lm())
    assert with_bias.num_trainable() - without.num_trainable() == 3
    assert "gate.bias" not in without.groups["projection"]
