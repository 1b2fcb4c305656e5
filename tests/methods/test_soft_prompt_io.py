"""Export -> reload gives the same outputs, for peft's prompt/prefix tuning and our DePT/EPT; mismatches refused."""

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

from lightning_peft import zoo
from lightning_peft.methods.base import MethodConfigError
from lightning_peft.methods.dept import EPT, DePT
from lightning_peft.methods.prompts import PrefixTuning, PromptTuning
from lightning_peft.methods.soft_prompt_io import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    SoftPromptLoadError,
    load_soft_prompt,
    save_soft_prompt,
)
from lightning_peft.tasks.classification import left_align
from tests.conftest import tiny_causal_lm


def _train_a_little(adapted):
    """Move every trained parameter away from its init, so a reload that re-initialised would differ."""
    with torch.no_grad():
        for group in adapted.groups.values():
            for p in group.values():
                p.add_(torch.randn_like(p) * 0.3)


def _outputs(model, name="tiny-llama"):
    ids, mask = torch.randint(20, 1000, (2, 7), generator=torch.Generator().manual_seed(9)), torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    with torch.no_grad():
        if name == "tiny-t5":
            return model(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :3]).logits
        ids, mask = left_align(ids, mask)  # the verbalizer's call, so the reloaded position fix matters too
        return model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0),
                     logits_to_keep=1).logits


def _base(name):
    return AutoModelForSeq2SeqLM.from_pretrained(zoo.resolve(name)) if name == "tiny-t5" else tiny_causal_lm(name)


CASES = [
    ("tiny-llama", PromptTuning(num_virtual_tokens=4)),
    ("tiny-llama", PrefixTuning(num_virtual_tokens=4, prefix_projection=True, encoder_hidden_size=16)),
    ("tiny-t5", PromptTuning(num_virtual_tokens=4)),
    ("tiny-llama", DePT(num_virtual_tokens=4, rank=2, max_length=12)),
    ("tiny-gpt2", EPT(num_virtual_tokens=4, rank=2, max_length=12, num_spaces=2, space_rank=3)),
    ("tiny-t5", DePT(num_virtual_tokens=4, rank=2, max_length=12, init_text="summarize", tokenizer="tiny-t5")),
]


@pytest.mark.parametrize(("name", "method"), CASES, ids=lambda v: v if isinstance(v, str) else type(v).__name__)
def test_export_then_reload_gives_identical_outputs(tmp_path, name, method):
    adapted = method.apply(_base(name))
    _train_a_little(adapted)
    expected = _outputs(adapted.model.eval(), name)
    method.export(adapted.model, tmp_path / "export")
    reloaded = load_soft_prompt(_base(name), tmp_path / "export")
    assert not reloaded.training
    torch.testing.assert_close(_outputs(reloaded, name), expected)


def test_peft_methods_export_in_peft_format(tmp_path):
    method = PromptTuning(num_virtual_tokens=3)
    method.export(method.apply(tiny_causal_lm()).model, tmp_path)
    assert (tmp_path / "adapter_config.json").is_file() and not (tmp_path / CONFIG_NAME).exists()
    assert isinstance(PeftModel.from_pretrained(tiny_causal_lm(), str(tmp_path)), PeftModel)


def test_dept_export_holds_only_the_trained_tensors_and_the_method(tmp_path):
    adapted = DePT(num_virtual_tokens=4, rank=2, max_length=12, init_text="hi", tokenizer="tiny-llama").apply(tiny_causal_lm())
    save_soft_prompt(adapted.model, tmp_path)
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert config["class_path"] == "lightning_peft.methods.dept.DePT"
    assert config["init_args"]["rank"] == 2 and "init_text" not in config["init_args"]
    assert config["base_model_type"] == "llama" and config["base_model_name_or_path"] == zoo.resolve("tiny-llama")
    from safetensors.torch import load_file

    assert set(load_file(str(tmp_path / WEIGHTS_NAME))) == {"soft_prompt", "lowrank_a", "lowrank_b"}


def test_trained_head_travels_with_the_export(tmp_path):
    def classifier():
        pad = zoo.load_tokenizer("tiny-llama").pad_token_id
        return AutoModelForSequenceClassification.from_pretrained(zoo.resolve("tiny-llama"), num_labels=2, pad_token_id=pad)

    adapted = DePT(num_virtual_tokens=3, rank=2, max_length=12).apply(classifier(), modules_to_save=["score"])
    _train_a_little(adapted)
    ids = torch.randint(20, 1000, (2, 5))
    with torch.no_grad():
        expected = adapted.model.eval()(input_ids=ids).logits
        save_soft_prompt(adapted.model, tmp_path)
        torch.testing.assert_close(load_soft_prompt(classifier(), tmp_path)(input_ids=ids).logits, expected)


def test_reload_onto_another_architecture_is_refused(tmp_path):
    save_soft_prompt(DePT(num_virtual_tokens=2, rank=2, max_length=8).apply(tiny_causal_lm()).model, tmp_path)
    with pytest.raises(SoftPromptLoadError, match="trained on a llama model .* not on this gpt2 model"):
        load_soft_prompt(tiny_causal_lm("tiny-gpt2"), tmp_path)


def test_shape_mismatch_is_refused_in_one_sentence(tmp_path):
    save_soft_prompt(DePT(num_virtual_tokens=2, rank=2, max_length=8).apply(tiny_causal_lm()).model, tmp_path)
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    config["init_args"]["rank"] = 3
    (tmp_path / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(SoftPromptLoadError, match=r"other shapes than this base model needs \(lowrank_a \(8, 2\) vs \(8, 3\)\)"):
        load_soft_prompt(tiny_causal_lm(), tmp_path)


def test_missing_keys_and_foreign_classes_are_refused(tmp_path):
    save_soft_prompt(DePT(num_virtual_tokens=2, rank=2, max_length=8).apply(tiny_causal_lm()).model, tmp_path)
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    (tmp_path / CONFIG_NAME).write_text(json.dumps({**config, "class_path": "lightning_peft.methods.dept.EPT"}))
    with pytest.raises(SoftPromptLoadError, match=r"missing \['gate.bias', 'gate.weight', 'space_down'\]"):
        load_soft_prompt(tiny_causal_lm(), tmp_path)
    (tmp_path / CONFIG_NAME).write_text(json.dumps({**config, "class_path": "os.system"}))
    with pytest.raises(SoftPromptLoadError, match="outside lightning_peft; pass allow_any_class=True"):
        load_soft_prompt(tiny_causal_lm(), tmp_path)


def test_only_peft_models_and_prompt_wrappers_export(tmp_path):
    with pytest.raises(MethodConfigError, match="got LlamaForCausalLM without a method_config"):
        save_soft_prompt(tiny_causal_lm(), tmp_path)
    with pytest.raises(SoftPromptLoadError, match="holds neither soft_prompt_config.json nor adapter_config.json"):
        load_soft_prompt(tiny_causal_lm(), tmp_path)
