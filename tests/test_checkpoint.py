"""Adapter-only checkpoints: what they hold, what they refuse to load onto, and how they are written."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from transformers import AutoModelForCausalLM, AutoTokenizer

from lightning_peft import zoo
from lightning_peft.checkpoint import AtomicCheckpointIO, CheckpointMismatchError
from lightning_peft.cli import LightningPeftCLI
from lightning_peft.modules import FineTuneModule
from tests import helpers


def assert_one_sentence(message: str) -> None:
    assert "\n" not in message and message.endswith(".") and ". " not in message, message


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A LoRA module trained 2 steps in Python (not through the CLI), and the checkpoint it wrote."""
    root = tmp_path_factory.mktemp("trained")
    module = helpers.lora_module()
    saver = ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=2, filename="{step}")
    helpers.trainer(root, max_steps=2, callbacks=[saver]).fit(
        module, datamodule=helpers.classification_data(helpers.write_jsonl(root / "data.jsonl")))
    return module, root / "ckpt" / "step=2.ckpt"


def test_checkpoint_holds_trainable_parameters_and_training_state_only(trained):
    module, path = trained
    saved = torch.load(path, weights_only=True)  # also proves no pickled objects (task, method) were stored
    assert set(saved["state_dict"]) == module.trainable_parameter_names()
    assert all("lora_" in name for name in saved["state_dict"])
    base_bytes = (Path(zoo.resolve(helpers.BACKBONE)) / "model.safetensors").stat().st_size
    assert path.stat().st_size < base_bytes / 20
    for key in ("optimizer_states", "lr_schedulers", "callbacks", "loops", "ClassificationData", "rng_states"):
        assert saved[key], key
    assert saved["ClassificationData"] == {"epoch": 0, "batches_processed": 2}
    facts = saved["lightning_peft"]
    assert facts["fingerprint"] == module.base_fingerprint and facts["backbone"] == helpers.BACKBONE
    assert facts["phrasings"] is None and facts["input_format"]["template"] == "{text}" and facts["input_format"]["column"] == "text"
    assert set(facts) == {"fingerprint", "backbone", "phrasings", "input_format", "dataset", "metrics"}


def _same_architecture_other_weights(folder: Path) -> str:
    """tiny-llama's config and tokenizer with weights drawn from another seed."""
    source = zoo.resolve(helpers.BACKBONE)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        AutoModelForCausalLM.from_config(zoo.load_config(helpers.BACKBONE)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize(("base", "targets", "match"), [
    ("other-weights", helpers.TARGETS, "was trained on base model 'tiny-llama'"),
    ("tiny-gpt2", ["c_attn"], "was trained on base model 'tiny-llama'"),
    (helpers.BACKBONE, ["q_proj", "k_proj"], "lacks 4 trainable parameters"),
])
def test_resuming_onto_another_base_or_method_fails_in_one_sentence(trained, tmp_path, base, targets, match):
    backbone = _same_architecture_other_weights(tmp_path / "other") if base == "other-weights" else base
    data = helpers.classification_data(helpers.write_jsonl(tmp_path / "data.jsonl"))
    with pytest.raises(CheckpointMismatchError, match=match) as error:
        helpers.trainer(tmp_path, max_steps=3).fit(helpers.lora_module(backbone, targets), datamodule=data,
                                                   ckpt_path=str(trained[1]))
    assert_one_sentence(str(error.value))


def test_a_failed_write_keeps_the_previous_checkpoint_and_leaves_no_partial_file(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": torch.tensor(1)}, target)

    def save_half_then_fail(obj, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"PK\x03\x04 half a zip archive")  # what a killed writer would leave behind
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"step": torch.tensor(2)}, target)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["last.ckpt"]
    assert torch.load(target, weights_only=True)["step"] == torch.tensor(1)


def test_the_cli_writes_checkpoints_atomically(tmp_path):
    config = helpers.cli_config(tmp_path, helpers.write_jsonl(tmp_path / "data.jsonl"))
    cli = LightningPeftCLI(FineTuneModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                           args=["--config", str(config)], run=False)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_fingerprint_ignores_a_freshly_initialised_task_head():
    """A head-classification base hashes the same in every process, whatever the RNG drew for its new head."""
    from lightning_peft.methods import Lora
    from lightning_peft.modules import LoraModule
    from lightning_peft.tasks import HeadClassification

    prints = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        module = LoraModule(backbone="tiny-llama", task=HeadClassification(), method=Lora(r=2, target_modules=["q_proj"]),
                            label_names=["a", "b"])
        module.configure_model()
        prints.append(module.base_fingerprint)
    assert prints[0] == prints[1]


def test_a_resumed_rank_gets_its_own_generator_state_back():
    from types import SimpleNamespace

    from lightning_peft import checkpoint

    module = helpers.lora_module()
    module.configure_model()
    states = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        states.append(checkpoint.capture_rng())
    trained = {f"model.{n}": p.detach() for group in module.groups.values() for n, p in group.items()}
    saved = {"state_dict": trained, "lightning_peft": {"fingerprint": module.base_fingerprint, "backbone": module.backbone},
             "rng_states": states[0], "rng_states_per_rank": states}
    module._trainer = SimpleNamespace(world_size=2, global_rank=1)
    module.on_load_checkpoint(saved)
    assert torch.equal(module._pending_rng["torch"], states[1]["torch"])
    module._trainer = SimpleNamespace(world_size=4, global_rank=1)  # resumed on another world size: rank 0's state
    module.on_load_checkpoint(saved)
    assert torch.equal(module._pending_rng["torch"], states[0]["torch"])


def _draws():
    import random

    import numpy as np

    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_rng_states_load_with_weights_only_and_give_the_same_draws_back():
    import io
    import random

    import numpy as np

    from lightning_peft import checkpoint

    before = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng():
            buffer = io.BytesIO()
            torch.save(checkpoint.capture_rng(), buffer)
            expected = _draws()
            _draws()
            buffer.seek(0)
            checkpoint.restore_rng(torch.load(buffer, weights_only=True))
            assert _draws() == expected
            # the layout written before capture_rng used Lightning's collector (CUDA states under "cuda")
            state = checkpoint.capture_rng()
            expected = _draws()
            checkpoint.restore_rng({"python": state["python"], "numpy": state["numpy"], "torch": state["torch"],
                                    "cuda": []})
            assert _draws() == expected
    finally:
        random.setstate(before[0])
        np.random.set_state(before[1])
