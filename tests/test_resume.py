"""Exact resume: a run restarted from a checkpoint trains exactly like the run that was never interrupted.

LoRA dropout > 0 makes every step depend on the RNG state, a step-decay schedule on the scheduler
state, AdamW on the optimizer state, and the length-bucketed sampler on the data module's position.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_peft.checkpoint import trainable_state
from lightning_peft.cli import main
from tests import helpers

TOTAL_STEPS = 11  # 9 batches per epoch: crosses the epoch boundary


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """One run of TOTAL_STEPS steps that saves a checkpoint after every step."""
    root = tmp_path_factory.mktemp("uninterrupted")
    L.seed_everything(7)
    module, recorder = helpers.lora_module(), helpers.LossRecorder()
    saver = ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=1, save_top_k=-1, filename="{step}")
    data_file = helpers.write_jsonl(root / "data.jsonl")
    helpers.trainer(root, TOTAL_STEPS, callbacks=[saver, recorder]).fit(
        module, datamodule=helpers.classification_data(data_file))
    return {"root": root, "data": data_file, "losses": recorder.losses,
            "weights": trainable_state(module.state_dict(), module.trainable_parameter_names())}


@pytest.mark.parametrize("step", [
    4,  # mid-epoch
    6,  # mid-epoch, with a validation run between the save and the next step
    9,  # the last batch of epoch 0: the resumed run starts a new epoch
])
def test_resumed_run_matches_the_uninterrupted_one_step_for_step(uninterrupted, tmp_path, step):
    L.seed_everything(1234)  # a fresh process would start from another RNG state; the checkpoint must restore it
    module, recorder = helpers.lora_module(), helpers.LossRecorder()
    helpers.trainer(tmp_path, TOTAL_STEPS, callbacks=[recorder]).fit(
        module, datamodule=helpers.classification_data(uninterrupted["data"]),
        ckpt_path=str(uninterrupted["root"] / "ckpt" / f"step={step}.ckpt"))
    assert recorder.losses == pytest.approx(uninterrupted["losses"][step:], abs=1e-6)
    for name, weight in trainable_state(module.state_dict(), module.trainable_parameter_names()).items():
        torch.testing.assert_close(weight, uninterrupted["weights"][name])


def test_cli_resume_with_ckpt_path_continues_exactly(tmp_path):
    losses = tmp_path / "losses.jsonl"  # both runs append here: 6 uninterrupted steps, then 3 resumed ones
    config = str(helpers.cli_config(tmp_path, helpers.write_jsonl(tmp_path / "data.jsonl"), losses, every_n_steps=3))
    main(["fit", "--config", config, "--trainer.max_steps", "6"])
    main(["fit", "--config", config, "--trainer.max_steps", "6", "--seed_everything", "99",
          "--ckpt_path", str(tmp_path / "ckpt" / "step=3.ckpt")])
    recorded = helpers.read_losses(losses)
    assert len(recorded) == 9
    assert recorded[6:] == pytest.approx(recorded[3:6], abs=1e-6)
