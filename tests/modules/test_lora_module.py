"""The LoRA-family module trains every task type end to end with a real Trainer (tiny models)."""

import lightning as L
import pytest
import torch

from lightning_peft.data import ClassificationData, Seq2SeqData, SFTData
from lightning_peft.methods import IA3, Lora
from lightning_peft.modules import LoraModule
from lightning_peft.tasks import CausalLMSFT, HeadClassification, Seq2Seq, VerbalizerClassification

SMALL = {"max_train_examples": 64, "max_eval_examples": 32, "batch_size": 8, "eval_batch_size": 16}


def _fit(module, data, steps=8):
    trainer = L.Trainer(max_steps=steps, limit_val_batches=2, val_check_interval=steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0)
    before = {k: v.clone() for k, v in module.state_dict().items()} if module.model is not None else None
    trainer.fit(module, datamodule=data)
    return trainer, before


def _module(backbone, task, method, data, lr=5e-3):
    data.setup("fit")
    return LoraModule(backbone=backbone, task=task, method=method, label_names=getattr(data, "label_names", None),
                      optimizer=lambda params: torch.optim.AdamW(params, lr=lr))


def _trained_only_adapter(module, data):
    module.configure_model()
    frozen = {n: p.detach().clone() for n, p in module.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
    trainer, _ = _fit(module, data)
    params = dict(module.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in frozen.items()), "a frozen base weight changed"
    assert any(not torch.equal(params[n], v) for n, v in trainable.items()), "no trainable weight changed"
    return trainer


def test_verbalizer_classification_with_lora():
    data = ClassificationData("trec6", tokenizer="tiny-llama", template="Q: {text}\nA:", **SMALL)
    module = _module("tiny-llama", VerbalizerClassification(label_words={"human": "person"}),
                     Lora(r=4, target_modules=["q_proj", "v_proj"]), data)
    trainer = _trained_only_adapter(module, data)
    assert 0.0 <= float(trainer.callback_metrics["val/acc"]) <= 1.0
    assert "val/f1" in trainer.callback_metrics


def test_head_classification_trains_head_and_adapter():
    data = ClassificationData("sms_spam", tokenizer="tiny-bert", **SMALL)
    module = _module("tiny-bert", HeadClassification(), Lora(r=4, target_modules=["query", "value"]), data)
    trainer = _trained_only_adapter(module, data)
    assert set(module.groups) == {"adapter", "head"}
    assert "val/acc" in trainer.callback_metrics


def test_causal_sft_with_ia3_reports_perplexity():
    data = SFTData("movie_dialog", tokenizer="tiny-llama", max_length=48, **SMALL)
    module = _module("tiny-llama", CausalLMSFT(), IA3(), data)
    trainer = _trained_only_adapter(module, data)
    assert float(trainer.callback_metrics["val/perplexity"]) > 1.0


def test_seq2seq_t5_learns_label_words():
    data = Seq2SeqData("trec6", tokenizer="tiny-t5", **SMALL)
    module = _module("tiny-t5", Seq2Seq(), Lora(r=4, target_modules=["q", "v"]), data, lr=1e-2)
    trainer = L.Trainer(max_steps=30, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0)
    module.configure_model()
    batch = next(iter(data.train_dataloader()))
    with torch.no_grad():
        loss_before = module.task.step(module.model.eval(), batch).loss
    trainer.fit(module, datamodule=data)
    with torch.no_grad():
        loss_after = module.task.step(module.model.eval(), batch).loss
    assert loss_after < loss_before  # 30 steps on 64 examples: the label words become likelier


def test_group_lr_must_name_existing_groups():
    data = ClassificationData("trec6", tokenizer="tiny-llama", **SMALL)
    module = _module("tiny-llama", VerbalizerClassification(), Lora(r=2, target_modules=["q_proj"]), data)
    module.group_lr = {"prompt": 0.3}
    with pytest.raises(ValueError, match=r"group_lr names groups \['prompt'\], but this method trains \['adapter'\]"):
        module.configure_model()


def test_optimizer_receives_named_groups_with_their_lr():
    data = ClassificationData("sms_spam", tokenizer="tiny-bert", **SMALL)
    data.setup("fit")
    module = LoraModule(backbone="tiny-bert", task=HeadClassification(), method=Lora(r=2, target_modules=["query"]),
                        label_names=data.label_names, group_lr={"head": 0.01},
                        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-4))
    module.configure_model()
    optimizer = module.configure_optimizers()
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs == {"adapter": 1e-4, "head": 0.01}
