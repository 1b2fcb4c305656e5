"""The soft-prompt module trains every method of the family with a real Trainer (tiny models), refuses
configurations that cannot work at setup, and exports what it trained so that a reload gives the same outputs."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from lightning_peft import zoo
from lightning_peft.callbacks import DualLRSchedule
from lightning_peft.data import ClassificationData, ParaphraseClassificationData, Seq2SeqData
from lightning_peft.methods import EPT, IAPT, DePT, MethodConfigError, PrefixTuning, PromptTuning
from lightning_peft.methods.soft_prompt_io import load_soft_prompt
from lightning_peft.modules import SoftPromptModule
from lightning_peft.tasks import RobustPrompt, Seq2Seq, VerbalizerClassification

SMALL = {"max_train_examples": 32, "max_eval_examples": 16, "batch_size": 8, "eval_batch_size": 16}
METHODS = {
    "prompt_tuning": lambda: PromptTuning(num_virtual_tokens=8, init="text", init_text="Classify the question:"),
    "prefix_tuning": lambda: PrefixTuning(num_virtual_tokens=4, prefix_projection=True, encoder_hidden_size=16),
    "prefix_tuning_from_text": lambda: PrefixTuning(num_virtual_tokens=4, init="text", init_text="Classify the question:"),
    "dept": lambda: DePT(num_virtual_tokens=4, rank=2, max_length=32, init_text="Classify the question:"),
    "ept": lambda: EPT(num_virtual_tokens=4, rank=2, max_length=32, num_spaces=2),
    "iapt": lambda: IAPT(num_tokens=2, bottleneck=8),
}


def _trainer(steps: int = 4, **kwargs) -> L.Trainer:
    options = dict(max_steps=steps, limit_val_batches=1, val_check_interval=steps, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    return L.Trainer(**{**options, **kwargs})


def _trec(**kwargs) -> ClassificationData:
    return ClassificationData("trec6", tokenizer="tiny-llama", template="Q: {text}\nA:", **{**SMALL, "max_length": 32, **kwargs})


def _module(method, data, task=None, lr=0.05, **kwargs) -> SoftPromptModule:
    return SoftPromptModule(backbone="tiny-llama", task=task or VerbalizerClassification(), method=method,
                            label_names=data.label_names, optimizer=lambda p: torch.optim.AdamW(p, lr=lr), **kwargs)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_trains_only_its_prompt_and_exports_what_it_trained(name, tmp_path):
    data = _trec()
    module = _module(METHODS[name](), data)
    module.configure_model()
    frozen = {n: p.detach().clone() for n, p in module.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
    assert trainable and set(module.groups) >= {"prompt"}
    trainer = _trainer()
    trainer.fit(module, datamodule=data)
    params = dict(module.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in frozen.items()), "a frozen base weight changed"
    assert any(not torch.equal(params[n], v) for n, v in trainable.items()), "the prompt did not train"
    assert 0.0 <= float(trainer.callback_metrics["val/acc"]) <= 1.0

    folder = module.export(tmp_path / "export")
    assert (folder / "tokenizer_config.json").is_file()
    base = AutoModelForCausalLM.from_pretrained(zoo.resolve("tiny-llama"))
    reloaded = PeftModel.from_pretrained(base, folder) if name.startswith(("prompt_tuning", "prefix_tuning")) else load_soft_prompt(base, folder)
    ids = torch.randint(3, 200, (2, 7))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        expected = module.eval().model(input_ids=ids, attention_mask=mask).logits[:, -1]
        got = reloaded.eval()(input_ids=ids, attention_mask=mask).logits[:, -1]
    torch.testing.assert_close(got, expected)


def test_dept_on_an_encoder_decoder_model_trains_the_encoder_prompt():
    data = Seq2SeqData("trec6", tokenizer="tiny-t5", source_template="question: {text}", target_column="label",
                       max_source_length=24, max_target_length=4, **SMALL)
    module = SoftPromptModule(backbone="tiny-t5", task=Seq2Seq(), method=DePT(num_virtual_tokens=4, rank=2, max_length=24),
                              optimizer=lambda p: torch.optim.AdamW(p, lr=0.05))
    trainer = _trainer()
    trainer.fit(module, datamodule=data)
    assert torch.isfinite(torch.tensor(float(trainer.callback_metrics["val/loss"])))
    assert module.model.lowrank_b.abs().max() > 0  # B starts at zero; training moved it


def test_data_longer_than_the_dept_offset_is_refused_at_setup():
    data = _trec(max_length=48)
    module = _module(DePT(num_virtual_tokens=4, rank=2, max_length=32), data)
    with pytest.raises(MethodConfigError, match=r"DePT takes inputs of up to 32 tokens \(its max_length\), but the data allows 48; set .*max_length >= 48"):
        _trainer().fit(module, datamodule=data)
    assert module.model is None  # refused before any weights loaded


def test_robust_prompt_without_paraphrases_is_refused_and_with_them_trains():
    data = _trec()
    module = _module(PromptTuning(num_virtual_tokens=4), data, task=RobustPrompt(VerbalizerClassification()))
    with pytest.raises(MethodConfigError, match="ParaphraseClassificationData"):
        _trainer().fit(module, datamodule=data)

    paraphrases = ParaphraseClassificationData(templates=["Q: {text}\nA:", "Question: {text}\nType:", "{text} ->"],
                                               dataset="trec6", tokenizer="tiny-llama", max_length=32, **SMALL)
    module = _module(PromptTuning(num_virtual_tokens=4), paraphrases, task=RobustPrompt(VerbalizerClassification(), weight=1.0))
    trainer = _trainer()
    trainer.fit(module, datamodule=paraphrases)
    assert torch.isfinite(torch.tensor(float(trainer.callback_metrics["train/loss"])))


def test_dual_lr_schedule_drives_dept_groups_with_their_own_peaks(tmp_path):
    data = _trec()
    module = _module(DePT(num_virtual_tokens=4, rank=2, max_length=32), data)
    schedule = DualLRSchedule(groups={"prompt": {"lr": 0.3, "warmup_steps": 2, "decay": "linear"},
                                      "lowrank": {"lr": 1e-4, "warmup_steps": 2, "decay": "linear"}})
    seen: list[dict[str, float]] = []

    class Record(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            seen.append({g["name"]: g["lr"] for g in optimizer.param_groups})

    _trainer(steps=6, limit_val_batches=0, callbacks=[schedule, Record()]).fit(module, datamodule=data)
    assert [round(s["prompt"] / 0.3, 6) for s in seen] == [0.0, 0.5, 1.0, 0.75, 0.5, 0.25]
    assert [round(s["lowrank"] / 1e-4, 6) for s in seen] == [0.0, 0.5, 1.0, 0.75, 0.5, 0.25]
