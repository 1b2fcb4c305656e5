"""ClozeClassification inside the existing FineTuneModule, trained on few-shot data, then used for prediction."""

from __future__ import annotations

import json
from functools import partial

import lightning as L
import pytest
import torch

from lightning_peft.data import FewShotClassificationData
from lightning_peft.inference.classify import classify
from lightning_peft.inference.loading import Runnable
from lightning_peft.methods import Lora
from lightning_peft.modules import LoraModule
from lightning_peft.tasks import ClozeClassification

LABELS = ["sport", "politics", "tech"]
WORDS = {"sport": ["football", "sportsmanship"], "politics": "megapolitics", "tech": ["tech", "zebrafishes"]}


@pytest.fixture
def topics_file(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNING_PEFT_CACHE", str(tmp_path / "cache"))
    records = [{"text": f"{label} story {i} " + "word " * (i % 5), "label": label} for label in LABELS for i in range(12)]
    path = tmp_path / "topics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


@pytest.mark.parametrize("backbone, lm, template, targets", [
    ("tiny-llama", "causal", "{text}\nTopic:", ["q_proj", "v_proj"]),
    ("tiny-bert", "masked", "{text} Topic: [MASK].", ["query", "value"]),
])
def test_lora_trains_a_cloze_task_on_few_shots_and_predicts(tmp_path, topics_file, backbone, lm, template, targets):
    data = FewShotClassificationData(topics_file, tokenizer=backbone, template=template, shots_per_class=2, shot_seed=0,
                                     label_names=LABELS, val_size=6, test_size=0, batch_size=3, max_length=32)
    module = LoraModule(backbone=backbone, task=ClozeClassification(WORDS, lm=lm), method=Lora(r=4, target_modules=targets),
                        label_names=LABELS, optimizer=partial(torch.optim.AdamW, lr=1e-2))
    trainer = L.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, max_steps=2, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        num_sanity_val_steps=0, limit_val_batches=1)
    trainer.fit(module, datamodule=data)
    assert len(data.datasets["train"]) == 6 and len(data.datasets["unlabelled"]) == 36 - 6 - 6
    assert trainer.global_step == 2
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert 0.0 <= float(trainer.callback_metrics["val/acc"]) <= 1.0
    lora_b = [p for name, p in module.model.named_parameters() if "lora_B" in name]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: the steps moved it

    runnable = Runnable(module.model.eval(), module.tokenizer, module.task, data.input_format)
    predicted = list(classify(runnable, [{"text": "sport story 99"}, {"text": "tech story 98"}], batch_size=2))
    assert [set(p["probabilities"]) for p in predicted] == [set(LABELS)] * 2
    assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-3 and p["label"] in LABELS for p in predicted)
