"""LastCheckpoint: last.ckpt at the end of any fit, and at the step a single-process fit failed."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lightning_peft.callbacks import LastCheckpoint
from tests import helpers


class FailAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


def _saved_step(path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


def test_fit_between_validations_ends_with_last_ckpt_of_its_final_step(tmp_path):
    data = helpers.classification_data(helpers.write_jsonl(tmp_path / "data.jsonl"))
    saver = LastCheckpoint(dirpath=tmp_path / "ckpt")
    helpers.trainer(tmp_path, 5, [saver], val_check_interval=3).fit(helpers.lora_module(), datamodule=data)
    assert _saved_step(tmp_path / "ckpt" / "last.ckpt") == 5  # Lightning alone would keep step 3's


def test_a_crash_leaves_last_ckpt_at_the_failed_step_and_no_other_copy(tmp_path):
    data = helpers.classification_data(helpers.write_jsonl(tmp_path / "data.jsonl"))
    saver = LastCheckpoint(dirpath=tmp_path / "ckpt")
    with pytest.raises(RuntimeError, match="simulated crash"):
        helpers.trainer(tmp_path, 8, [saver, FailAt(2)], val_check_interval=6).fit(helpers.lora_module(), datamodule=data)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["last.ckpt"]
    assert _saved_step(tmp_path / "ckpt" / "last.ckpt") == 2


def test_fast_dev_run_writes_nothing(tmp_path):
    data = helpers.classification_data(helpers.write_jsonl(tmp_path / "data.jsonl"))
    saver = LastCheckpoint(dirpath=tmp_path / "ckpt")
    helpers.trainer(tmp_path, 3, [saver], fast_dev_run=True).fit(helpers.lora_module(), datamodule=data)
    assert not (tmp_path / "ckpt").exists()
