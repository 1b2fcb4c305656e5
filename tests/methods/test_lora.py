import pytest
import torch
from peft import PeftModel

from lightning_peft.methods import IA3, Lora, MethodConfigError
from tests.conftest import tiny_causal_lm


@pytest.mark.parametrize("variant", ["lora", "dora", "rslora"])
def test_lora_variants_train_only_adapter_and_start_at_base(variant):
    base = tiny_causal_lm()
    ids = torch.randint(0, 1000, (2, 7))
    before = base(input_ids=ids).logits.detach()
    adapted = Lora(r=4, target_modules=["q_proj", "v_proj"], variant=variant, dropout=0.0).apply(base)
    trainable = {n for n, p in adapted.model.named_parameters() if p.requires_grad}
    assert trainable == adapted.trainable_names()
    assert all("lora_" in n for n in trainable)
    # B starts at zero, so the adapted model computes exactly the base function
    torch.testing.assert_close(adapted.model(input_ids=ids).logits, before)
    expected_scale = {"lora": 16.0 / 4, "dora": 16.0 / 4, "rslora": 16.0 / 2}[variant]
    layer = adapted.model.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.scaling["default"] == pytest.approx(expected_scale)


def test_lora_count_matches_formula():
    adapted = Lora(r=4, target_modules=["q_proj"], dropout=0.0).apply(tiny_causal_lm())
    # q_proj is 64 -> 64 in each of 2 layers: A is 4x64, B is 64x4
    assert adapted.num_trainable() == 2 * (4 * 64 + 64 * 4)


def test_all_linear_and_modules_to_save_groups():
    adapted = Lora(r=2, target_modules="all-linear", modules_to_save=["lm_head"]).apply(tiny_causal_lm("tiny-gpt2"))
    assert set(adapted.groups) == {"adapter", "head"}
    assert all(".modules_to_save." in n for n in adapted.groups["head"])


def test_ia3_scales_start_at_identity():
    base = tiny_causal_lm()
    ids = torch.randint(0, 1000, (1, 5))
    before = base(input_ids=ids).logits.detach()
    adapted = IA3().apply(base)
    assert set(adapted.groups) == {"adapter"}
    torch.testing.assert_close(adapted.model(input_ids=ids).logits, before)


def test_unknown_target_module_is_one_clear_sentence():
    with pytest.raises(MethodConfigError, match=r"\['qkv'\] not found in LlamaForCausalLM; its linear layers are"):
        Lora(target_modules=["qkv"]).apply(tiny_causal_lm())


@pytest.mark.parametrize("kwargs", [{"r": 0}, {"dropout": 1.5}, {"target_modules": []}])
def test_bad_lora_arguments_rejected_at_construction(kwargs):
    with pytest.raises(MethodConfigError):
        Lora(**kwargs)


def test_export_reload_and_merge_give_same_logits(tmp_path):
    method = Lora(r=4, target_modules=["q_proj", "v_proj"], dropout=0.0)
    adapted = method.apply(tiny_causal_lm())
    with torch.no_grad():
        for p in adapted.groups["adapter"].values():
            p.add_(torch.randn_like(p) * 0.1)
    ids = torch.randint(0, 1000, (2, 6))
    expected = adapted.model(input_ids=ids).logits.detach()
    method.export(adapted.model, tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(tiny_causal_lm(), tmp_path / "adapter")
    torch.testing.assert_close(reloaded(input_ids=ids).logits, expected)
    merged = method.merge(adapted.model)
    torch.testing.assert_close(merged(input_ids=ids).logits, expected, atol=1e-5, rtol=1e-4)


def test_dotted_target_names_select_as_in_peft():
    """peft matches a listed name against the end of each module's full name, so `attention.output.dense`
    picks BERT's attention output projection and not the FFN's `output.dense`."""
    from transformers import AutoModelForSequenceClassification

    from lightning_peft import zoo

    def bert():
        return AutoModelForSequenceClassification.from_pretrained(zoo.resolve("tiny-bert"), num_labels=2)

    adapted = Lora(r=2, target_modules=["attention.output.dense"], dropout=0.0).apply(bert())
    layers = {n.split(".lora_")[0] for n in adapted.trainable_names() if ".lora_" in n}
    assert layers and all(layer.endswith("attention.output.dense") for layer in layers)
    with pytest.raises(MethodConfigError, match=r"\['attention.output.qkv'\] not found in BertForSequenceClassification"):
        Lora(target_modules=["attention.output.qkv"]).apply(bert())


def _trained_export(tmp_path, **settings):
    method = Lora(r=4, target_modules=["q_proj", "v_proj"], dropout=0.0, **settings)
    adapted = method.apply(tiny_causal_lm())
    with torch.no_grad():
        for p in adapted.groups["adapter"].values():
            p.add_(torch.randn_like(p) * 0.1)
    method.export(adapted.model, tmp_path / "adapter")
    return adapted


def test_init_from_starts_training_from_an_exported_adapter(tmp_path):
    trained = _trained_export(tmp_path, variant="rslora")
    ids = torch.randint(0, 1000, (2, 6))
    started = Lora(r=4, target_modules=["q_proj", "v_proj"], dropout=0.0, variant="rslora",
                   init_from=str(tmp_path / "adapter")).apply(tiny_causal_lm())
    torch.testing.assert_close(started.model(input_ids=ids).logits, trained.model(input_ids=ids).logits.detach())
    assert started.trainable_names() == trained.trainable_names()  # a warm start, still trainable
    assert all(p.requires_grad for p in started.groups["adapter"].values())


@pytest.mark.parametrize("settings, message", [
    ({"r": 8}, r"other adapter settings \(r 4 there, 8 here\)"),
    ({"variant": "lora"}, r"use_rslora True there, False here"),
    ({"target_modules": ["q_proj"]}, r"target_modules"),
])
def test_init_from_with_other_settings_is_one_sentence(tmp_path, settings, message):
    _trained_export(tmp_path, variant="rslora")
    kwargs = {"r": 4, "target_modules": ["q_proj", "v_proj"], "variant": "rslora", **settings}
    with pytest.raises(MethodConfigError, match=message):
        Lora(init_from=str(tmp_path / "adapter"), **kwargs).apply(tiny_causal_lm())


def test_init_from_a_folder_without_an_adapter_or_on_another_base_is_refused(tmp_path):
    with pytest.raises(MethodConfigError, match="holds no adapter_config.json"):
        Lora(r=4, target_modules=["q_proj"], init_from=str(tmp_path)).apply(tiny_causal_lm())
    _trained_export(tmp_path)
    with pytest.raises(MethodConfigError, match="does not fit this base model"):
        Lora(r=4, target_modules=["q_proj", "v_proj"], init_from=str(tmp_path / "adapter")).apply(_narrower_llama())


def _narrower_llama():
    """tiny-llama's architecture at half its width: same module names, other shapes."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from lightning_peft import zoo

    config = AutoConfig.from_pretrained(zoo.resolve("tiny-llama"))
    config.hidden_size, config.intermediate_size = config.hidden_size // 2, config.intermediate_size // 2
    return AutoModelForCausalLM.from_config(config)
