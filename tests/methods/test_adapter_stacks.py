"""MAD-X stacks (a frozen language adapter under a trained task adapter; swapping it) and PVP (`init_from`)."""

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model

from lightning_peft.methods import BottleneckAdapter, MethodConfigError
from lightning_peft.methods.adapter_io import LANGUAGE, LANGUAGE_FOLDER, TRAINED
from lightning_peft.methods.adapter_layers import AdapterStack
from tests.conftest import tiny_causal_lm


@torch.no_grad()
def _logits(model) -> torch.Tensor:
    ids = torch.randint(5, 400, (2, 7), generator=torch.Generator().manual_seed(3))
    return model.eval()(input_ids=ids).logits


def _trained(method: BottleneckAdapter, seed: int, model=None):
    """`method` applied to tiny-llama with its trained adapters set to random values (as if trained)."""
    adapted = method.apply(model if model is not None else tiny_causal_lm())
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in adapted.groups["adapter"].values():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return adapted


def _exported(folder: Path, seed: int, **settings) -> Path:
    method = BottleneckAdapter(**settings)
    method.export(_trained(method, seed).model, folder)
    return folder


@pytest.fixture(scope="module")
def languages(tmp_path_factory) -> tuple[Path, Path]:
    """Two language adapters (Pfeiffer, as MAD-X) exported from tiny-llama."""
    root = tmp_path_factory.mktemp("languages")
    return _exported(root / "one", 1, placement="pfeiffer"), _exported(root / "two", 2, placement="pfeiffer")


def test_the_language_adapter_is_frozen_under_the_task_adapter(languages):
    adapted = BottleneckAdapter(language_adapter=str(languages[0])).apply(tiny_causal_lm())
    frozen = {n for n, p in adapted.model.named_parameters() if f".{LANGUAGE}." in n}
    assert frozen and not any(adapted.model.get_parameter(n).requires_grad for n in frozen)
    assert not frozen & adapted.trainable_names() and all(f".{TRAINED}." in n for n in adapted.groups["adapter"])
    for stack in (m for m in adapted.model.modules() if isinstance(m, AdapterStack)):  # language first, then task
        assert list(stack) in ([LANGUAGE, TRAINED], [TRAINED])  # Houlsby task adapter; Pfeiffer language adapter
    # At init the task adapter is the identity: the stack computes what the language adapter alone does.
    alone = BottleneckAdapter().load(tiny_causal_lm(), languages[0])
    torch.testing.assert_close(_logits(adapted.model), _logits(alone))
    loss = adapted.model(input_ids=torch.tensor([[5, 6, 7, 8]]), labels=torch.tensor([[5, 6, 7, 8]])).loss
    loss.backward()
    assert all(adapted.model.get_parameter(n).grad is None for n in frozen)


def test_swapping_the_language_adapter_under_an_exported_task_adapter(languages, tmp_path):
    one, two = (str(folder) for folder in languages)
    method = BottleneckAdapter(language_adapter=one)
    adapted = _trained(method, 3)
    method.export(adapted.model, tmp_path)
    assert (tmp_path / LANGUAGE_FOLDER / "adapter_model.safetensors").is_file()  # the export is complete by itself
    restored = BottleneckAdapter().load(tiny_causal_lm(), tmp_path)
    torch.testing.assert_close(_logits(restored), _logits(adapted.model))
    swapped = BottleneckAdapter(language_adapter=two).load(tiny_causal_lm(), tmp_path)
    assert not torch.allclose(_logits(swapped), _logits(adapted.model), atol=1e-4)
    rebuilt = _trained(BottleneckAdapter(language_adapter=two), 3).model  # the same task weights on language two
    torch.testing.assert_close(_logits(swapped), _logits(rebuilt))


def test_init_from_starts_from_the_exported_weights(tmp_path):
    folder = _exported(tmp_path, 4, placement="houlsby", reduction_factor=8)
    source = BottleneckAdapter().load(tiny_causal_lm(), folder)
    adapted = BottleneckAdapter(placement="houlsby", reduction_factor=8, init_from=str(folder)).apply(tiny_causal_lm())
    saved = dict(source.named_parameters())
    assert adapted.groups["adapter"] and all(torch.equal(p, saved[n]) for n, p in adapted.groups["adapter"].items())
    assert all(p.requires_grad for p in adapted.groups["adapter"].values())  # a starting point, still trained
    torch.testing.assert_close(_logits(adapted.model), _logits(source))


@pytest.mark.parametrize(("settings", "match"), [
    ({"placement": "pfeiffer"}, "other places than this method inserts"),
    ({"reduction_factor": 16}, "other shapes than this method builds"),
])
def test_init_from_refuses_another_placement_or_width(settings, match, tmp_path):
    folder = _exported(tmp_path, 5, placement="houlsby", reduction_factor=8)
    with pytest.raises(MethodConfigError, match=match) as refused:
        BottleneckAdapter(**{"placement": "houlsby", "reduction_factor": 8, **settings, "init_from": str(folder)}).apply(
            tiny_causal_lm())
    assert "\n" not in str(refused.value) and "init_from" in str(refused.value)


def test_adapters_from_another_base_are_refused(languages, tmp_path):
    gpt2 = BottleneckAdapter(placement="pfeiffer")
    gpt2.export(_trained(gpt2, 6, tiny_causal_lm("tiny-gpt2")).model, tmp_path / "gpt2")
    changed = tiny_causal_lm()  # same architecture, other weights (e.g. another fine-tune of it)
    with torch.no_grad():
        changed.model.layers[1].mlp.down_proj.weight.mul_(1.01)
    for what, method, model in [
        ("init_from", BottleneckAdapter(placement="pfeiffer", init_from=str(tmp_path / "gpt2")), tiny_causal_lm()),
        ("language_adapter", BottleneckAdapter(language_adapter=str(languages[0])), changed),
    ]:
        with pytest.raises(MethodConfigError, match=f"{what} .* was trained on another base") as refused:
            method.apply(model)
        assert "\n" not in str(refused.value)


def test_a_peft_folder_is_refused_in_one_sentence(tmp_path):
    get_peft_model(tiny_causal_lm(), LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(str(tmp_path))
    with pytest.raises(MethodConfigError, match="is a peft adapter") as refused:
        BottleneckAdapter(init_from=str(tmp_path)).apply(tiny_causal_lm())
    assert "\n" not in str(refused.value)
