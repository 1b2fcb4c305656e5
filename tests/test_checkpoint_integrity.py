"""Checkpoint integrity: the base fingerprint covers every weight and names the weights rather than
their folder, and what was written before (the sampled fingerprint) still loads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lightning_peft import zoo
from lightning_peft.card import CARD_NAME, CardError
from lightning_peft.checkpoint import CheckpointMismatchError, fingerprint, sampled_fingerprint
from lightning_peft.cli import main
from tests import helpers

CHANGED_TENSOR, CHANGED_ELEMENT = "model.layers.1.mlp.up_proj.weight", 5000  # past the 4,096 the old fingerprint saw


def assert_one_sentence(message: str) -> None:
    assert "\n" not in message and message.endswith(".") and ". " not in message and "Traceback" not in message, message


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    """A checkpoint written by `lightning-peft fit` (3 steps on tiny-llama)."""
    root = tmp_path_factory.mktemp("fitted")
    main(["fit", "--config", str(helpers.cli_config(root, helpers.write_jsonl(root / "data.jsonl"))),
          "--trainer.max_steps", "3"])
    return root / "ckpt" / "step=3.ckpt"


# -- the base fingerprint --------------------------------------------------------------------

def _base() -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(zoo.resolve(helpers.BACKBONE))


def _changed_base(folder: Path) -> str:
    """tiny-llama with one weight changed at element 5000 of one tensor, saved as a model folder."""
    model = _base()
    with torch.no_grad():
        model.state_dict()[CHANGED_TENSOR].view(-1)[CHANGED_ELEMENT] += 0.5
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(zoo.resolve(helpers.BACKBONE)).save_pretrained(folder)
    return str(folder)


def test_the_fingerprint_sees_a_change_past_the_first_elements():
    model = _base()
    before, before_sampled = fingerprint(model), sampled_fingerprint(model)
    with torch.no_grad():
        model.state_dict()[CHANGED_TENSOR].view(-1)[CHANGED_ELEMENT] += 0.5
    assert fingerprint(model) != before
    assert sampled_fingerprint(model) == before_sampled  # why it was replaced


def test_the_fingerprint_is_of_the_values_whatever_dtype_holds_them():
    """A base stored in bfloat16 hashes the same loaded in bfloat16 or float32 (the upcast is exact)."""
    stored = _base().to(torch.bfloat16)
    assert fingerprint(stored) == fingerprint(stored.float())
    assert fingerprint(_base()) != fingerprint(_base().to(torch.bfloat16))  # rounded weights are another base


def test_resuming_onto_a_base_changed_past_its_first_elements_fails_in_one_sentence(fitted, tmp_path):
    data = helpers.classification_data(helpers.write_jsonl(tmp_path / "data.jsonl"))
    with pytest.raises(CheckpointMismatchError, match="was trained on base model 'tiny-llama'") as error:
        helpers.trainer(tmp_path, max_steps=4).fit(helpers.lora_module(_changed_base(tmp_path / "changed")),
                                                   datamodule=data, ckpt_path=str(fitted))
    assert_one_sentence(str(error.value))


def test_the_same_weights_in_another_folder_resume(fitted, tmp_path):
    copy = shutil.copytree(zoo.resolve(helpers.BACKBONE), tmp_path / "moved-base")
    data = helpers.classification_data(helpers.write_jsonl(tmp_path / "data.jsonl"))
    trainer = helpers.trainer(tmp_path, max_steps=4)
    trainer.fit(helpers.lora_module(str(copy)), datamodule=data, ckpt_path=str(fitted))
    assert trainer.global_step == 4


def test_a_checkpoint_with_the_sampled_fingerprint_of_before_still_resumes(fitted, tmp_path):
    saved = torch.load(fitted, weights_only=True)
    saved["lightning_peft"]["fingerprint"] = sampled_fingerprint(_base())
    torch.save(saved, tmp_path / "old.ckpt")
    data = helpers.classification_data(helpers.write_jsonl(tmp_path / "data.jsonl"))
    trainer = helpers.trainer(tmp_path, max_steps=4)
    trainer.fit(helpers.lora_module(), datamodule=data, ckpt_path=str(tmp_path / "old.ckpt"))
    assert trainer.global_step == 4


def test_an_export_loads_onto_its_base_only_with_either_fingerprint_form(fitted, tmp_path):
    from lightning_peft.inference import load_folder

    folder = tmp_path / "adapter"
    main(["export", "--ckpt_path", str(fitted), "--output_dir", str(folder)])
    card = json.loads((folder / CARD_NAME).read_text())
    assert card["base_fingerprint"] == fingerprint(_base())
    load_folder(folder, device="cpu")
    for recorded, loads in [(sampled_fingerprint(_base()), True), ("v2:" + "0" * 32, False)]:
        (folder / CARD_NAME).write_text(json.dumps({**card, "base_fingerprint": recorded}))
        if loads:
            load_folder(folder, device="cpu")  # an export written before v2
        else:
            with pytest.raises(CardError, match="was trained on a base 'tiny-llama' with fingerprint v2:0+"):
                load_folder(folder, device="cpu")
