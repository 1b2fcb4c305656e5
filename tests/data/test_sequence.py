"""A two-task sequence: stage k trains on task k, every stage is evaluated on both tasks."""

import lightning as L
import pytest
import torch

from lightning_peft.callbacks import HalfFineTuning
from lightning_peft.data import DataConfigError, SFTData, TaskSequenceData
from lightning_peft.methods import FullFineTuning
from lightning_peft.modules import SelectiveModule
from lightning_peft.tasks import CausalLMSFT

SMALL = {"max_length": 32, "max_train_examples": 16, "max_eval_examples": 8, "batch_size": 8, "eval_batch_size": 8}


def _sequence(**kw):
    return TaskSequenceData(
        [SFTData("movie_dialog", **SMALL), SFTData("trec6", prompt_column="text", response_column="label", **SMALL)],
        names=["dialog", "trec"], tokenizer="tiny-llama", **kw)


class SeenBatches(L.Callback):
    def __init__(self):
        self.first_ids = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.first_ids.setdefault(trainer.current_epoch, batch["input_ids"][0].tolist())


def test_each_stage_trains_its_task_and_evaluates_all(tmp_path):
    data, seen = _sequence(), SeenBatches()
    module = SelectiveModule(backbone="tiny-llama", task=CausalLMSFT(), method=FullFineTuning(),
                             optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3))
    hft = HalfFineTuning(every_n_epochs=1)
    trainer = L.Trainer(max_epochs=2, reload_dataloaders_every_n_epochs=1, callbacks=[seen, hft], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=data)
    trec_ids = data.tasks[1].datasets["train"]
    first_trec = [list(trec_ids[i]["input_ids"]) for i in range(len(trec_ids))]

    def is_trec(row):  # a padded batch row starts with one of TREC's tokenized examples
        return any(row[: len(example)] == example for example in first_trec)

    assert not is_trec(seen.first_ids[0]) and is_trec(seen.first_ids[1])  # stage 0 dialog, stage 1 TREC
    assert {"val/dialog/perplexity", "val/trec/perplexity"} <= set(trainer.callback_metrics)
    assert [h["stage"] for h in hft.history] == [0, 1]  # HFT drew one half per task


def test_needs_dataloaders_reloaded_at_stage_boundaries():
    trainer = L.Trainer(max_epochs=2, logger=False)
    data = _sequence()
    data.trainer = trainer
    with pytest.raises(DataConfigError, match="reload_dataloaders_every_n_epochs: 1"):
        data.setup("fit")


def test_names_must_match_tasks():
    with pytest.raises(DataConfigError, match="one distinct name per task"):
        TaskSequenceData([SFTData("movie_dialog")], names=["a", "b"])
