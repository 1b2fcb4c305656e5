"""Bottleneck adapters: identity at init, parameter counts, placements per architecture, heads, refusals.

The life cycle (training, checkpoints, export/load, disable, merge refused) is the contract suite's;
MAD-X stacks and PVP initialisation are in test_adapter_stacks.py.
"""

import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification, OPTConfig, OPTForCausalLM

from lightning_peft import zoo
from lightning_peft.methods import BottleneckAdapter, MethodConfigError
from lightning_peft.methods.adapter_layers import SLOT, AdapterStack
from tests.conftest import tiny_causal_lm

D = 64  # hidden size of every tiny model
LAYERS = 2


def _model(name: str):
    if name == "tiny-t5":
        return AutoModelForSeq2SeqLM.from_pretrained(zoo.resolve(name))
    if name == "tiny-bert":
        return AutoModelForMaskedLM.from_pretrained(zoo.resolve(name))
    return tiny_causal_lm(name)


def _inputs(name: str) -> dict[str, torch.Tensor]:
    ids = torch.randint(5, 400, (2, 7), generator=torch.Generator().manual_seed(3))
    inputs = {"input_ids": ids, "attention_mask": torch.tensor([[1] * 7, [1] * 5 + [0] * 2])}
    return {**inputs, "decoder_input_ids": ids[:, :3]} if name == "tiny-t5" else inputs


@torch.no_grad()
def _logits(model, name: str) -> torch.Tensor:
    return model.eval()(**_inputs(name)).logits


def _adapted_points(model) -> set[str]:
    return {name.removesuffix(f".{SLOT}") for name, module in model.named_modules() if isinstance(module, AdapterStack)}


def _randomize(adapted, *groups: str) -> None:
    with torch.no_grad():
        for group in groups or ("adapter",):
            for parameter in adapted.groups[group].values():
                parameter.normal_(0, 0.5)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-bert", "tiny-t5"])
def test_starts_as_the_identity_and_freezes_the_base(name):
    expected = _logits(_model(name), name)
    adapted = BottleneckAdapter().apply(_model(name))
    assert torch.equal(_logits(adapted.model, name), expected)  # the up-projection starts at zero: h + 0 exactly
    trainable = {n for n, p in adapted.model.named_parameters() if p.requires_grad}
    assert trainable == set(adapted.groups["adapter"]) and all(f".{SLOT}.task." in n for n in trainable)
    _randomize(adapted)
    assert not torch.allclose(_logits(adapted.model, name), expected)  # ... and the adapters are on the path


@pytest.mark.parametrize(("placement", "factor", "per_layer"), [("houlsby", 16, 2), ("pfeiffer", 16, 1), ("houlsby", 4, 2)])
def test_parameter_count_follows_the_reduction_factor(placement, factor, per_layer):
    adapted = BottleneckAdapter(placement=placement, reduction_factor=factor).apply(tiny_causal_lm())
    width = D // factor
    assert adapted.num_trainable() == LAYERS * per_layer * (D * width + width + width * D + D)


@pytest.mark.parametrize(("name", "houlsby", "pfeiffer"), [
    ("tiny-llama", {"model.layers.{i}.self_attn.o_proj"}, {"model.layers.{i}.mlp.down_proj"}),
    ("tiny-gpt2", {"transformer.h.{i}.attn.c_proj"}, {"transformer.h.{i}.mlp.c_proj"}),
    ("tiny-bert", {"bert.encoder.layer.{i}.attention.output.dense"}, {"bert.encoder.layer.{i}.output.dense"}),
])
def test_placements_insert_after_attention_and_ffn_outputs(name, houlsby, pfeiffer):
    def expand(patterns):
        return {p.format(i=i) for p in patterns for i in range(LAYERS)}

    assert _adapted_points(BottleneckAdapter(placement="houlsby").apply(_model(name)).model) == expand(houlsby | pfeiffer)
    assert _adapted_points(BottleneckAdapter(placement="pfeiffer").apply(_model(name)).model) == expand(pfeiffer)


def test_disabled_gives_the_base_in_place_and_turns_back_on():
    method = BottleneckAdapter()
    base = _logits(tiny_causal_lm(), "tiny-llama")
    adapted = method.apply(tiny_causal_lm())
    _randomize(adapted)
    on = _logits(adapted.model, "tiny-llama")
    with method.disabled(adapted.model) as off:
        assert off is adapted.model
        torch.testing.assert_close(_logits(off, "tiny-llama"), base)
    torch.testing.assert_close(_logits(adapted.model, "tiny-llama"), on)


def test_a_head_trains_in_full_and_round_trips_through_export(tmp_path):
    def classifier():
        torch.manual_seed(0)  # tiny-bert ships no pooler: the same random one in both bases
        return AutoModelForSequenceClassification.from_pretrained(zoo.resolve("tiny-bert"), num_labels=2)

    method = BottleneckAdapter(placement="pfeiffer")
    adapted = method.apply(classifier(), ["classifier"])
    assert set(adapted.groups) == {"adapter", "head"}
    assert set(adapted.groups["head"]) == {"classifier.weight", "classifier.bias"}
    _randomize(adapted, "adapter", "head")  # a head unlike the fresh base's: loading must replace it
    method.export(adapted.model, tmp_path)
    loaded = BottleneckAdapter().load(classifier(), tmp_path)
    torch.testing.assert_close(_logits(loaded, "tiny-bert"), _logits(adapted.model, "tiny-bert"))


def test_merge_is_refused_in_one_sentence():
    method = BottleneckAdapter()
    adapted = method.apply(tiny_causal_lm())
    with pytest.raises(MethodConfigError, match="cannot merge") as refused:
        method.merge(adapted.model)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(("settings", "match"), [
    ({"reduction_factor": 0}, "must be a positive number"),
    ({"placement": "parallel"}, "not an adapter placement"),
    ({"non_linearity": "softmax"}, "not available"),
    ({"init_from": ""}, "must be the folder of an exported bottleneck adapter"),
])
def test_bad_settings_are_refused_at_construction(settings, match):
    with pytest.raises(MethodConfigError, match=match) as refused:
        BottleneckAdapter(**settings)
    assert "\n" not in str(refused.value) and str(refused.value).endswith(".")


@pytest.mark.parametrize("setting", ["init_from", "language_adapter"])
def test_a_folder_without_an_adapter_is_refused_before_the_model_changes(setting, tmp_path):
    model = tiny_causal_lm()
    with pytest.raises(MethodConfigError, match=f"{setting} {tmp_path} holds no bottleneck_adapter.json") as refused:
        BottleneckAdapter(**{setting: str(tmp_path)}).apply(model)
    assert "\n" not in str(refused.value) and all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("factor", [65, 128.0])
def test_a_reduction_factor_larger_than_the_hidden_size_is_refused(factor):
    with pytest.raises(MethodConfigError, match=r"width 0 .*hidden size 64.*at most 64") as refused:
        BottleneckAdapter(reduction_factor=factor).apply(tiny_causal_lm())
    assert "\n" not in str(refused.value)


def test_an_unknown_architecture_is_refused_in_one_sentence():
    config = OPTConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2,
                       word_embed_proj_dim=16, max_position_embeddings=32)
    with pytest.raises(MethodConfigError, match="do not know where to sit in a 'opt' model; supported: bert, gpt2, llama, t5"):
        BottleneckAdapter().apply(OPTForCausalLM(config))
    with pytest.raises(MethodConfigError, match="not Linear"):
        BottleneckAdapter().apply(torch.nn.Linear(4, 4))
