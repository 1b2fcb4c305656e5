"""zoo.check_architecture: a backbone of the wrong architecture for a task is one sentence, not a transformers traceback."""

from __future__ import annotations

import pytest
from transformers import T5Config

from lightning_peft import zoo
from lightning_peft.zoo import ModelNotFoundError, check_architecture


def _message(name: str, auto_class_name: str) -> str:
    with pytest.raises(ModelNotFoundError) as error:
        check_architecture(name, auto_class_name)
    return str(error.value)


def test_encoder_decoder_backbone_for_a_causal_task_is_one_sentence():
    message = _message("tiny-t5", "AutoModelForCausalLM")
    assert "'tiny-t5' is a t5 model" in message and "needs an AutoModelForCausalLM model" in message
    assert "\n" not in message and message.endswith(".") and message.count(". ") == 0
    assert "BartConfig" not in message  # not transformers' list of every accepted config class
    suggested = message.split("in the zoo: ")[1].rstrip(").").split(", ")
    assert {"tiny-llama", "tiny-gpt2", "smollm2-135m"} <= set(suggested) and "tiny-t5" not in suggested


def test_decoder_backbone_for_a_seq2seq_task_is_pointed_to_t5():
    message = _message("tiny-llama", "AutoModelForSeq2SeqLM")
    assert "'tiny-llama' is a llama model" in message and message.endswith("(in the zoo: tiny-t5).")


@pytest.mark.parametrize("name, auto_class_name", [("tiny-llama", "AutoModelForCausalLM"),
                                                   ("tiny-t5", "AutoModelForSeq2SeqLM"),
                                                   ("tiny-bert", "AutoModelForSequenceClassification")])
def test_matching_architecture_passes(name, auto_class_name):
    check_architecture(name, auto_class_name)


def test_local_folder_without_a_fitting_zoo_model(tmp_path, monkeypatch):
    T5Config(d_model=8, d_ff=8, d_kv=4, num_layers=1, num_heads=2, vocab_size=32).save_pretrained(tmp_path)
    for other in [name for name in zoo.ZOO if name != "tiny-t5"]:
        monkeypatch.delitem(zoo.ZOO, other)
    message = _message(str(tmp_path), "AutoModelForCausalLM")
    assert message.startswith(f"Backbone {str(tmp_path)!r} is a t5 model")
    assert message.endswith("; choose a backbone of a matching architecture.")


@pytest.mark.parametrize("name", [name for name in zoo.ZOO if name != "smollm2-135m"])  # smollm2: 20 s to build once
def test_declared_model_type_is_the_models_own(name):
    assert zoo.load_config(name).model_type == zoo.ZOO[name].model_type
